"""What `archcalc import TARGET` builds: MODULE:FACTORY or path/to/file.py:Factory
(the user's code, called with JSON keyword arguments), `timm:NAME` (timm's
create_model by name, never pretrained: nothing downloads), and the input a
target is traced at when --input is not given (a timm model's pretrained
config; 3x224x224 otherwise)."""
from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass

from torch import nn

from ...errors import MissingExtra, SpecError
from .failures import ImportFailure, _first_line, _quiet_warnings


# --------------------------------------------------------------------------
# the target: MODULE:FACTORY or path/to/file.py:Factory


def load_target(target: str, kwargs_text: str | None = None):
    """(the nn.Module, its label): import the module, call the factory with
    the JSON keyword arguments. Bad input raises SpecError (exit 2); the
    user's code raising raises ImportFailure (exit 1)."""
    if not isinstance(target, str) or ":" not in target:
        raise SpecError(f"the model is MODULE:FACTORY (torchvision.models:resnet50) or "
                        f"FILE.py:NAME. Received: {target!r}")
    where, _, attr = target.rpartition(":")
    if not where or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise SpecError(f"the model is MODULE:FACTORY, FACTORY a Python name. "
                        f"Received: {target!r}")
    kwargs = parse_kwargs(kwargs_text)
    module = _import(where, target)
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            names = [n for n in dir(factory) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise SpecError(f"{where} has no {part!r}{hint}")
        factory = getattr(factory, part)
    if isinstance(factory, nn.Module):
        if kwargs:
            raise SpecError(f"{target} is a module instance, not a factory: "
                            "it takes no --kwargs")
        return factory, target
    if not callable(factory):
        raise SpecError(f"{target} is a {type(factory).__name__}, not a factory or an "
                        "nn.Module class")
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as e:
        raise SpecError(f"{target} does not take these --kwargs: {e}") from None
    except ValueError:
        pass  # no signature to check (a builtin): let the call tell
    try:
        with _quiet_warnings():
            model = factory(**kwargs)
    except TypeError as e:
        if kwargs and re.search(r"unexpected keyword argument|got multiple values", str(e)):
            raise SpecError(f"{target} does not take these --kwargs: {_first_line(e)}") \
                from None
        raise ImportFailure(f"{target}({_kwargs_text(kwargs)}) raised "
                            f"TypeError: {_first_line(e)}") from None
    except Exception as e:  # the user's code: one line naming the factory
        raise ImportFailure(f"{target}({_kwargs_text(kwargs)}) raised "
                            f"{type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"{target} returned a {type(model).__name__}, not a torch.nn.Module")
    return model, target


def parse_kwargs(text: str | None) -> dict:
    if text is None or not text.strip():
        return {}
    from ...inputs import parse_json   # bounded: size, depth, digits, finite numbers
    try:
        value = parse_json(text, "--kwargs")
    except SpecError as e:
        if "ARCHCALC_" in e.message:   # a limit's message says how to raise it
            raise
        raise SpecError(f"--kwargs takes a JSON object such as '{{\"num_classes\": 10}}'; "
                        f"{e.message.removeprefix('--kwargs: ')}") from None
    if not isinstance(value, dict):
        raise SpecError(f"--kwargs takes a JSON object such as '{{\"num_classes\": 10}}'. "
                        f"Received a JSON {type(value).__name__}")
    bad = [k for k in value if not k.isidentifier()]
    if bad:
        raise SpecError(f"--kwargs: {bad[0][:40]!r} is not a keyword argument name")
    return value


def _import(where: str, target: str):
    if where.endswith(".py") or os.sep in where or "/" in where:
        from ... import limits
        from ...inputs import check_input_file   # a regular file of bounded size
        check_input_file(where, "a Python file", limits.MAX_SOURCE_BYTES)
        name = "archcalc_import_" + re.sub(r"\W", "_", os.path.splitext(
            os.path.basename(where))[0])
        spec = importlib.util.spec_from_file_location(name, where)
        if spec is None or spec.loader is None:
            raise SpecError(f"{where} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        folder = os.path.dirname(os.path.abspath(where))
        sys.path.insert(0, folder)   # its own imports, as `python FILE` would find them
        try:
            sys.modules[name] = module
            with _quiet_warnings():
                spec.loader.exec_module(module)
        except SyntaxError as e:
            raise SpecError(f"{where}: invalid Python (line {e.lineno}): {e.msg}") from None
        except Exception as e:
            raise ImportFailure(f"running {where} raised {type(e).__name__}: "
                                f"{_first_line(e)}") from None
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
        return module
    if not all(p.isidentifier() for p in where.split(".")):
        raise SpecError(f"{where!r} is not a module name (a.b.c) or a .py file")
    try:
        with _quiet_warnings():
            return importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name and (where == e.name or where.startswith(e.name + ".")):
            raise SpecError(f"no module named {e.name!r} (in {target})") from None
        raise ImportFailure(f"importing {where} raised ModuleNotFoundError: "
                            f"{_first_line(e)}") from None
    except Exception as e:
        raise ImportFailure(f"importing {where} raised {type(e).__name__}: "
                            f"{_first_line(e)}") from None


def _kwargs_text(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


@contextlib.contextmanager
def empty_weights():
    """Build modules with their parameters and buffers on the meta device: no
    memory, no initialization time (the figures need only the shapes). For
    factories that compute nothing from their weights at construction."""
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def parameter(self, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer(self, name, tensor, persistent=True):
        if tensor is not None and tensor.device.type != "meta":
            tensor = tensor.to("meta")
        register_buffer(self, name, tensor, persistent=persistent)

    nn.Module.register_parameter = parameter
    nn.Module.register_buffer = buffer
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter
        nn.Module.register_buffer = register_buffer


# --------------------------------------------------------------------------
# timm:NAME, and the input a target is traced at


TIMM = "timm:"
DEFAULT_INPUT = (3, 224, 224)
# timm's names: resnet50, vit_base_patch16_224, resnet50.a1_in1k (a pretrained tag)
_TIMM_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?")


@dataclass
class Target:
    model: object           # the nn.Module
    label: str              # as the user wrote it: notes and messages name it
    default_input: tuple    # (C, H, W) when --input is not given


def is_timm(target: str) -> bool:
    return isinstance(target, str) and target.startswith(TIMM)


def load(target: str, kwargs_text: str | None = None, *, meta: bool = False) -> Target:
    """Build the model a target names. meta=True builds it with its weights on
    the meta device (no memory, no initialization: the figures need only the
    shapes). Bad input raises SpecError (exit 2), the model's code raising
    ImportFailure (exit 1), timm not installed MissingExtra."""
    weights = empty_weights() if meta else contextlib.nullcontext()
    if is_timm(target):
        return _load_timm(target, kwargs_text, weights)
    with weights:
        model, label = load_target(target, kwargs_text)
    return Target(model, label, DEFAULT_INPUT)


def timm_module():
    """timm, or MissingExtra naming the extra that installs it."""
    try:
        import timm
    except ImportError:
        raise MissingExtra("timm", "timm", "archcalc import timm:NAME") from None
    return timm


def timm_name(target: str) -> str:
    """The model name of timm:NAME, checked against timm's registry: an
    unknown one is one line with the closest names timm has."""
    name = target[len(TIMM):]
    if not _TIMM_NAME.fullmatch(name):
        raise SpecError(f"timm:NAME takes a timm model name such as timm:resnet50. "
                        f"Received: {target[:80]!r}")
    timm = timm_module()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name.partition(".")[0], timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else \
            " (python -c 'import timm; print(timm.list_models(\"*res*\"))' lists its names)"
        raise SpecError(f"timm has no model {name!r}{hint}")
    return name


def _load_timm(target, kwargs_text, weights) -> Target:
    name = timm_name(target)
    kwargs = parse_kwargs(kwargs_text)
    if kwargs.pop("pretrained", False):
        raise SpecError(f"{target}: import never downloads weights (the spec needs only "
                        "the shapes): leave out pretrained")
    timm = timm_module()
    try:
        with weights, _quiet_warnings():
            model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as e:
        if kwargs and re.search(r"unexpected keyword argument|got multiple values", str(e)):
            raise SpecError(f"{target} does not take these --kwargs: "
                            f"{_first_line(e)}") from None
        raise ImportFailure(f"timm.create_model({name!r}) raised TypeError: "
                                     f"{_first_line(e)}") from None
    except Exception as e:  # timm's (or the model's) code: one line naming the call
        raise ImportFailure(f"timm.create_model({name!r}) raised "
                                     f"{type(e).__name__}: {_first_line(e)}") from None
    return Target(model, target, timm_input(model))


def timm_input(model) -> tuple:
    """The input a timm model was configured for: its pretrained config's
    input_size (inception_v3: 3x299x299), else 3x224x224."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if (isinstance(size, (tuple, list)) and len(size) == 3
            and all(isinstance(v, int) and v > 0 for v in size)):
        return tuple(size)
    return DEFAULT_INPUT
