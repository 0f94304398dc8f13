"""What `archcalc import TARGET` builds: `timm:NAME` (timm's create_model by
name, never pretrained: nothing downloads) or any MODULE:FACTORY / FILE.py:NAME
(importer.load_target), and the input a target is traced at when --input is
not given (a timm model's pretrained config; 3x224x224 otherwise)."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..errors import MissingExtra, SpecError

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
    from . import importer
    from contextlib import nullcontext
    weights = importer.empty_weights() if meta else nullcontext()
    if is_timm(target):
        return _load_timm(target, kwargs_text, weights)
    with weights:
        model, label = importer.load_target(target, kwargs_text)
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
    from . import importer
    name = timm_name(target)
    kwargs = importer.parse_kwargs(kwargs_text)
    if kwargs.pop("pretrained", False):
        raise SpecError(f"{target}: import never downloads weights (the spec needs only "
                        "the shapes): leave out pretrained")
    timm = timm_module()
    try:
        with weights, importer._quiet_warnings():
            model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as e:
        if kwargs and re.search(r"unexpected keyword argument|got multiple values", str(e)):
            raise SpecError(f"{target} does not take these --kwargs: "
                            f"{importer._first_line(e)}") from None
        raise importer.ImportFailure(f"timm.create_model({name!r}) raised TypeError: "
                                     f"{importer._first_line(e)}") from None
    except Exception as e:  # timm's (or the model's) code: one line naming the call
        raise importer.ImportFailure(f"timm.create_model({name!r}) raised "
                                     f"{type(e).__name__}: {importer._first_line(e)}") from None
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
