"""Importing max pools with indices and the max unpools that use them
(SegNet / DeconvNet): `MaxPool2d(..., return_indices=True)` (or
`F.max_pool2d(..., return_indices=True)`) becomes a `maxpool` row, each
`MaxUnpool2d` / `F.max_unpool2d` a `max_unpool` row whose `of` is that pool
row's path; archcalc's own compiled unpool spec imports back to its totals;
an output_size other than the pool's input size, and indices used by anything
but an unpool, are refused naming where.
"""
import pytest

import archcalc
from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.spec.loader import load, loads
from conftest import spec_path

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from archcalc.torch import importer  # noqa: E402


def cbr(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class SegNet(nn.Module):
    """Two encoder stages each ending in a max pool with indices, two decoder
    stages each starting with the max unpool of the matching pool."""

    def __init__(self, classes=5):
        super().__init__()
        self.enc1 = cbr(3, 8)
        self.pool1 = nn.MaxPool2d(2, 2, return_indices=True)
        self.enc2 = cbr(8, 16)
        self.pool2 = nn.MaxPool2d(2, 2, return_indices=True)
        self.mid = cbr(16, 16)
        self.unpool2 = nn.MaxUnpool2d(2, 2)
        self.dec2 = cbr(16, 8)
        self.unpool1 = nn.MaxUnpool2d(2, 2)
        self.dec1 = cbr(8, 8)
        self.score = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        x = self.enc1(x)
        size1 = x.size()
        x, i1 = self.pool1(x)
        x = self.enc2(x)
        x, i2 = self.pool2(x)
        x = self.mid(x)
        x = self.dec2(self.unpool2(x, i2))
        x = self.dec1(self.unpool1(x, i1, output_size=size1))
        return self.score(x)


class Down(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.conv = cbr(i, o)
        self.pool = nn.MaxPool2d(2, return_indices=True)

    def forward(self, x):
        return self.pool(self.conv(x))


class Up(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.unpool = nn.MaxUnpool2d(2)
        self.conv = cbr(i, o)

    def forward(self, x, indices, size=None):
        return self.conv(self.unpool(x, indices, output_size=size))


class Stages(nn.Module):
    """Pools and unpools in stage modules: each `of` is a nested path."""

    def __init__(self):
        super().__init__()
        self.down = nn.ModuleList([Down(3, 8), Down(8, 8), Down(8, 8)])
        self.up = nn.ModuleList([Up(8, 8), Up(8, 8), Up(8, 4)])

    def forward(self, x):
        saved = []
        for d in self.down:
            x, i = d(x)
            saved.append(i)
        for u, i in zip(self.up, reversed(saved)):
            x = u(x, i)
        return x


class Functional(nn.Module):
    """F.max_pool2d / F.max_unpool2d, and one pool module called twice."""

    def __init__(self):
        super().__init__()
        self.c1 = cbr(3, 8)
        self.c2 = cbr(8, 8)
        self.pool = nn.MaxPool2d(2, return_indices=True)

    def forward(self, x):
        y, i = F.max_pool2d(self.c1(x), 2, return_indices=True)
        z, j = self.pool(y)
        z, k = self.pool(self.c2(z))
        z = F.max_unpool2d(z, k, 2)
        z = F.max_unpool2d(z, j, 2, 2, 0, y.shape[-2:])
        return F.max_unpool2d(z, i, kernel_size=2, output_size=x.size())


def randomize_norms(model):
    """Running statistics other than PyTorch's initial ones, so that the
    comparison sees them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def check_same_function(model, shape):
    """As tests/test_import.py checks torchvision's models: the imported spec's
    built model loads the original's state_dict strictly and computes the same."""
    torch.manual_seed(0)
    randomize_norms(model)
    model.eval()
    done = importer.import_module(model, shape, label=type(model).__name__)
    spec = loads(done.text, file=type(model).__name__)
    total = sum(p.numel() for p in model.parameters())
    assert done.params == total and not done.unused
    assert analyze(spec).totals["params"] == total
    built = spec.build().eval()
    built.load_state_dict(model.state_dict(), strict=True)
    assert sum(p.numel() for p in built.parameters()) == total
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert (built(x) - model(x)).abs().max().item() <= 1e-5
    return done, spec


def unpool_rows(spec):
    """{row path: (kind, of)} of the pools and unpools."""
    out = {}
    for r in analyze(spec).rows[1:]:
        kind = r.ops[0].kind.name if r.ops else None
        if kind in ("maxpool", "max_unpool"):
            out[r.name] = (kind, getattr(r.ops[0].args, "of", None) if kind == "max_unpool"
                           else None)
    return out


def test_segnet_module_form_imports_and_computes_the_same():
    done, spec = check_same_function(SegNet(), (3, 32, 32))
    assert unpool_rows(spec) == {"pool1": ("maxpool", None), "pool2": ("maxpool", None),
                                 "unpool2": ("max_unpool", "pool2"),
                                 "unpool1": ("max_unpool", "pool1")}
    assert 'of = "pool1"' in done.text and "return_indices" not in done.text


def test_nested_stages_name_their_pools_by_path():
    done, spec = check_same_function(Stages(), (3, 32, 32))
    rows = unpool_rows(spec)
    assert rows["up.0.unpool"] == ("max_unpool", "down.2.pool")
    assert rows["up.2.unpool"] == ("max_unpool", "down.0.pool")
    assert [k for k, (kind, _) in rows.items() if kind == "maxpool"] == \
        ["down.0.pool", "down.1.pool", "down.2.pool"]


def test_functional_forms_and_a_pool_module_called_twice():
    done, spec = check_same_function(Functional(), (3, 32, 32))
    rows = unpool_rows(spec)
    pools = [k for k, (kind, _) in rows.items() if kind == "maxpool"]
    unpools = [of for kind, of in rows.values() if kind == "max_unpool"]
    assert len(pools) == 3 and len(set(pools)) == 3
    assert unpools == pools[::-1]   # each unpool undoes the pool before it, innermost first


def test_compiled_deconvnet_imports_back_to_the_same_totals():
    spec = load(spec_path("deconvnet_unpool.toml"))
    report = analyze(spec)
    with importer.empty_weights():
        model = spec.build()
    again = archcalc.from_module(model, input=report.model.input)
    assert analyze(again).totals == report.totals
    rows = unpool_rows(again)
    assert rows["unpool1"] == ("max_unpool", "pool1")
    assert rows["unpool2"] == ("max_unpool", "pool2")


class Mismatched(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = Down(3, 4)
        self.up = Up(4, 4)

    def forward(self, x):
        y, i = self.down(x)
        return self.up(y, i, size=(x.shape[-2] + 1, x.shape[-1] + 1))


def test_an_unpool_to_another_size_is_refused_naming_it():
    # --strict refuses it; a default import keeps it as a measured opaque row
    with pytest.raises(importer.Unsupported) as e:
        importer.import_module(Mismatched().eval(), (3, 16, 16), strict=True)
    text = str(e.value)
    assert "output_size 17x17" in text and "down.pool" in text and "16x16" in text
    assert "at up.unpool" in text


class OtherUse(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.down = Down(3, 4)
        self.unpool = nn.MaxUnpool2d(2)

    def forward(self, x):
        y, i = self.down(x)
        if self.how == "float":
            return self.unpool(y, i) + i.float().mean()
        if self.how == "indexed":
            return self.unpool(y, i[:, :, :, :])
        return i


@pytest.mark.parametrize("how, error, says", [
    ("float", importer.Unsupported, "Tensor.float (reads the indices of the max pool at "
                                    "down.pool"),
    ("indexed", importer.Unsupported, "operator.getitem (reads the indices of the max pool "
                                      "at down.pool"),
    ("returned", SpecError, "returns the indices of the max pool at down.pool"),
])
def test_indices_used_otherwise_are_refused(how, error, says):
    with pytest.raises(error) as e:
        importer.import_module(OtherUse(how).eval(), (3, 16, 16), strict=True)
    assert says in str(e.value)


@pytest.mark.parametrize("model", [Mismatched(), OtherUse("float"), OtherUse("indexed")],
                         ids=["other-size", "float", "indexed"])
def test_indices_used_otherwise_import_as_opaque_rows_by_default(model):
    from torch.utils.flop_counter import FlopCounterMode
    from archcalc.analysis import analyze
    from archcalc.spec.loader import loads
    model = model.eval()
    done = importer.import_module(model, (3, 16, 16))
    assert done.opaque
    totals = analyze(loads(done.text)).totals
    assert totals["params"] == sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 16, 16))
    assert totals["macs"] == counter.get_total_flops() // 2
