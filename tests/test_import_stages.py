"""The importer package, stage by stage: its modules form a DAG (no import
cycle), and each stage works on its own (targets parsing, the probe's shapes,
the layout classifier, conv-BN-activation fusion), checked against PyTorch."""
import ast
import importlib
import pathlib
from collections import OrderedDict

import pytest

from archcalc.errors import SpecError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from archcalc.torch.importer import (dataflow, fusion, layout, probing, targets,  # noqa: E402
                                     tracing)

PACKAGE = pathlib.Path(importer.__file__).parent


def _intra_imports(path: pathlib.Path) -> set:
    """The package's modules one module imports (at its top or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and \
                (node.module or "").startswith("archcalc.torch.importer"):
            out.add(node.module.split(".")[3] if node.module.count(".") >= 3 else "__init__")
    return out


def test_the_package_s_modules_form_a_dag():
    modules = {p.stem: _intra_imports(p) for p in PACKAGE.glob("*.py")}
    assert {"targets", "tracing", "probing", "graph_builder", "layout", "structure",
            "naming", "fusion", "emit", "export_trace"} <= set(modules)
    # no stage reaches back into the package's __init__ (the orchestration)
    assert not any("__init__" in deps for deps in modules.values())
    done: set = set()
    order = []
    while len(done) < len(modules):
        ready = [m for m, deps in modules.items() if m not in done and deps - {m} <= done]
        assert ready, f"import cycle among {sorted(set(modules) - done)}"
        done.update(ready)
        order.extend(sorted(ready))
    assert order.index("failures") < order.index("targets") < order.index("__init__")


def test_no_module_of_the_package_is_over_800_lines_nor_a_function_over_80():
    for p in PACKAGE.glob("*.py"):
        text = p.read_text()
        assert len(text.splitlines()) <= 800, p.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 80, f"{p.name}: {node.name}"


# ------------------------------------------------------------------ targets


def test_targets_parse_kwargs_and_reject_bad_targets():
    assert targets.parse_kwargs('{"num_classes": 10, "width": 0.5}') == \
        {"num_classes": 10, "width": 0.5}
    assert targets.parse_kwargs(None) == {}
    for bad in ("resnet18", "torchvision.models:", ":resnet18"):
        with pytest.raises(SpecError):
            targets.load_target(bad)
    with pytest.raises(SpecError):
        targets.parse_kwargs("[1, 2]")        # not an object
    assert targets.is_timm("timm:resnet18") and not targets.is_timm("torchvision.models:x")


def test_targets_load_a_factory_with_its_kwargs():
    model, label = targets.load_target("torch.nn:Linear", '{"in_features": 4, "out_features": 3}')
    assert isinstance(model, nn.Linear) and (model.in_features, model.out_features) == (4, 3)
    assert label == "torch.nn:Linear"


# ------------------------------------------------------------------ probe


def test_probe_measures_every_node_s_shape_as_pytorch_does():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    gm = tracing.trace(model)
    found = probing.probe(gm, (3, 32, 32), meta=True)
    shapes = {n.name if n.op != "placeholder" else "x": tuple(found.values[n])
              for n in gm.graph.nodes if n.op != "output"}
    # PyTorch's own run of each stage, batch of probing.PROBE_BATCH
    x = torch.zeros(probing.PROBE_BATCH, 3, 32, 32)
    expected = {"x": tuple(x.shape)}
    for i, m in enumerate(model):
        x = m(x)
        expected[f"_{i}"] = tuple(x.shape)
    assert shapes == expected
    assert shapes["_0"] == (2, 8, 16, 16)
    # tensors are marked as probed shapes (a plain tuple is a value)
    assert all(dataflow._tensor(found.values[n]) for n in gm.graph.nodes if n.op != "output")


# ------------------------------------------------------------------ layout


class _Reshape(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how

    def forward(self, x):
        return self.how(x)


def _shuffle(x, groups=4):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


@pytest.mark.parametrize("how, chw, expected", [
    (lambda x: x.flatten(1), (8, 4, 4), [("flatten", {})]),
    (lambda x: x.view(x.size(0), -1), (8, 4, 4), [("flatten", {})]),
    (lambda x: x.flatten(2).transpose(1, 2), (8, 4, 4), [("tokens", {})]),
    (lambda x: x.contiguous(), (8, 4, 4), []),
    (_shuffle, (8, 4, 4), [("channel_shuffle", {"groups": 4})]),
])
def test_layout_classifies_a_reshape_chain(how, chw, expected):
    gm = tracing.trace(_Reshape(how).eval())
    found = probing.probe(gm, chw, meta=True)
    chain = [n for n in gm.graph.nodes if n.op in ("call_method", "call_function")
             and n.target not in ("size",) and not (n.op == "call_function"
                                                   and n.target.__name__ == "getattr")]
    chain = [n for n in chain if dataflow._tensor(found.values[n])]
    x = dataflow.FlowNode(index=0, op="input", inputs=[], shape=chw, torch_shape=chw)
    assert layout._classify_layout(chain, x, found, dict(gm.named_modules())) == expected


def test_the_channel_shuffle_the_classifier_names_is_pytorch_s():
    x = torch.arange(2 * 8 * 3 * 3.).reshape(2, 8, 3, 3)
    assert torch.equal(_shuffle(x, 4), nn.ChannelShuffle(4)(x))


def test_an_nn_channel_shuffle_imports_through_its_kind_and_computes_the_same():
    """nn.ChannelShuffle maps back by the channel_shuffle kind's from_torch; the
    spec built from the imported text, given the module's weights, gives its output."""
    from archcalc.spec.loader import loads
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ChannelShuffle(4)).eval()
    done = importer.import_module(model, (3, 4, 4), label="shuffled")
    assert '{name = "1", channel_shuffle = 4}' in done.text
    built = loads(done.text, file="<shuffled>").build().eval()
    built.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(built(x), model(x))


def test_layout_refuses_a_reshape_that_mixes_samples():
    gm = tracing.trace(_Reshape(lambda x: x.reshape(-1, 4)).eval())
    found = probing.probe(gm, (8, 4, 4), meta=True)
    chain = [n for n in gm.graph.nodes if n.op == "call_method"]
    x = dataflow.FlowNode(index=0, op="input", inputs=[], shape=(8, 4, 4), torch_shape=(8, 4, 4))
    with pytest.raises(Exception, match="batch"):
        layout._classify_layout(chain, x, found, {})


# ------------------------------------------------------------------ fusion


def test_fusion_folds_conv_bn_activation_into_one_row():
    level = {"name": "stem", "layers": [{"name": "0", "conv": 8, "kernel": 3, "bias": False},
                                        {"name": "1", "batch_norm": True},
                                        {"name": "2", "relu": True}]}
    assert fusion._fuse_level(level, {"batch_norm": {}}) == \
        {"name": "stem", "conv": 8, "kernel": 3, "bias": False, "batch_norm": True,
         "activation": "relu"}
    # a batch norm with other than the shared arguments stays a row of its own
    odd = {"name": "stem", "layers": [level["layers"][0], {"name": "1", "batch_norm": True,
                                                           "eps": 1e-3}]}
    assert fusion._fuse_level(odd, {"batch_norm": {}}) == odd


def test_an_imported_conv_bn_relu_builds_the_original_s_modules():
    """The fused row builds back the same nn.Sequential: state_dict keys and
    shapes equal the original's (PyTorch's own modules, written here)."""
    from archcalc.spec.loader import loads
    model = nn.Sequential(OrderedDict(
        stem=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                           nn.ReLU(inplace=True)),    # torchvision's; not in place stays a row
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(8, 10))).eval()
    done = importer.import_module(model, (3, 16, 16), label="tiny")
    stem = [line for line in done.text.splitlines() if 'name = "stem"' in line]
    assert stem and "batch_norm = true" in stem[0] and 'activation = "relu"' in stem[0]
    built = loads(done.text, file="<tiny>").build()
    ours = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == theirs


# ------------------------------------------------------------------ from_torch, registry-driven

from types import SimpleNamespace  # noqa: E402

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402

from archcalc.layers import kinds  # noqa: E402
from archcalc.torch.importer import mappers  # noqa: E402
from test_registry_kinds import _case, _engine  # noqa: E402  (the kinds' argument draws)

MAPPED_BACK = [name for name, kind in kinds().items() if vars(type(kind)).get("torch_modules")]
# every kind that builds a module maps back from it, or says why not (not_mapped_back)
BUILT = [name for name, kind in kinds().items() if not kind.not_built]
ROUND_TRIP = [name for name in BUILT if not kinds()[name].not_mapped_back]


def test_the_registry_drives_the_module_mappers():
    assert {"conv", "conv_transpose", "fc", "batch_norm", "avgpool"} <= set(MAPPED_BACK)
    for name in MAPPED_BACK:
        kind = kinds()[name]
        for dotted in type(kind).torch_modules:
            where, _, cls = dotted.rpartition(".")
            found = mappers.MODULE_MAPPERS[getattr(importlib.import_module(where), cls)]
            assert getattr(found, "__func__", None) is type(kind).from_torch, dotted


def test_a_kind_that_says_it_does_not_map_back_has_no_hook():
    """A stated reason is not stale: the kind names no torch module to read."""
    for name in BUILT:
        kind = kinds()[name]
        if kind.not_mapped_back:
            assert name not in MAPPED_BACK, name


def _import_rows(module, x):
    """The importer's rows for one leaf module (its mapper, found by the module's
    class as the importer finds it: a kind's from_torch or a mapper of the
    importer), or None where the importer has no mapper for that class."""
    mapper = mappers._mapper_for(module)
    if mapper is None:
        return None
    call = mappers.Call(node=None, module=module, args=(), kwargs={}, x=tuple(x),
                        x_torch=tuple(x), y_torch=None)
    found = mapper(call, module)
    return getattr(found, "rows", found)    # a max pool that gives its indices: its rows


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_a_built_module_maps_back_to_the_same_layer(name):
    """For every kind that builds a module: random valid arguments -> build ->
    the importer's mapper for that module gives a row that builds the same
    module (PyTorch's repr of its configuration) with the same shape, params
    and MACs. A kind whose module cannot map back says why in not_mapped_back."""
    kind = kinds()[name]

    @settings(max_examples=6, deadline=None, database=None,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(_case(kind))
    def check(case):
        given_args, x = case
        engine = _engine(kind, given_args, x)
        assume(engine is not None)
        a, y, params, macs = engine
        module = kind.build(a, x)      # on the CPU, the shapes tiny: a mapper may read values
        found = _import_rows(module, x)
        # a container (fc on a map builds Flatten + Linear) is traced through, not mapped
        assume(found is not None or len(list(module.children())) > 1)
        if found is None:
            return
        [(kind_name, mapped)] = found
        # the same kind, or one the importer writes for the same module (an
        # adaptive average pool to 1 x 1 is a global average pool)
        back_kind = kinds()[kind_name]
        back = _engine(back_kind, {k: v for k, v in mapped.items() if v is not None}, x)
        assert back is not None, (kind_name, mapped)
        assert (tuple(back[1]), back[2], back[3]) == (tuple(y), params, macs), mapped
        assert repr(back_kind.build(back[0], x)) == repr(module), (kind_name, mapped)

    check()


def test_an_activation_torch_fixes_otherwise_has_no_mapping():
    """nn.Softplus switches to x past beta*x > threshold: only torch's default 20
    is the softplus kind; another threshold is reported, not mapped."""
    kind = kinds()["softplus"]
    call = SimpleNamespace(x=(4,), x_torch=(4,), args=(), kwargs={})
    assert kind.from_torch(call, nn.Softplus(beta=2.0)) == [("softplus", {"beta": 2.0})]
    with pytest.raises(Exception, match="threshold=5"):
        kind.from_torch(call, nn.Softplus(threshold=5))
    x = torch.linspace(-3, 30, 50)
    assert not torch.allclose(nn.Softplus(threshold=5)(x), nn.Softplus()(x))
