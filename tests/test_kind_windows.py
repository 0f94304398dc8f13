"""Swin's and MaxViT's window kinds (archcalc/layers/window_attention.py)
against torchvision's own modules and models, an independent implementation:

- whole models: torchvision's six Swins and maxvit_t import with no opaque
  row, params = sum(p.numel()) and MACs = FlopCounterMode / 2 on the meta
  device, torchvision's own GFLOPS and the papers' figures (Swin-T/S/B,
  MaxViT-T);
- small whole models (a Swin V1, a Swin V2 with padded windows, a MaxViT)
  with their weights: the imported spec's model loads the state_dict
  strictly, gives the same outputs, and `check` agrees on every figure; the
  same for swin_t itself under -m slow;
- each kind on random small configurations (hypothesis) against the
  torchvision module it maps: from_torch, the same output with torchvision's
  state_dict loaded strictly, params, and MACs as FlopCounterMode counts;
- bad arguments: one line naming the layer and what is wrong, exit 2.

The registry-driven tests (test_registry_kinds, test_import_stages) cover the
kinds' schema-drawn arguments without an edit.
"""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
tv = pytest.importorskip("torchvision")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from torchvision.models import maxvit as tv_maxvit  # noqa: E402
from torchvision.models import swin_transformer as tv_swin  # noqa: E402

from archcalc.analysis import analyze  # noqa: E402
from archcalc.layers import lookup  # noqa: E402
from archcalc.spec.loader import loads  # noqa: E402
from archcalc.torch import importer  # noqa: E402

WINDOW_KINDS = {"window_attention", "window_attention_v2", "patch_merging", "window_partition",
                "group_transpose", "window_departition", "partition_attention"}


def meta_macs(model, shape, batch=1) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(batch, *shape, device="meta"))
    return counter.get_total_flops() // 2


def imported_meta(name, shape=(3, 224, 224)):
    with importer.empty_weights():
        model = tv.models.get_model(name, weights=None).eval()
    done = importer.import_module(model, shape, label=f"torchvision.models:{name}",
                                  strict=True)
    return model, done, analyze(loads(done.text, file=name))


# -- whole models on the meta device ------------------------------------------------


# the papers' params (millions) and FLOPs as they count them (G multiply-
# accumulates) at 224 x 224: Liu et al. 2021, Table 1; Tu et al. 2022, Table 1
PAPERS = {"swin_t": (28, 4.5), "swin_s": (50, 8.7), "swin_b": (88, 15.4), "maxvit_t": (31, 5.6)}


@pytest.mark.parametrize("name", ["swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s",
                                  "swin_v2_b", "maxvit_t"])
def test_model_imports_exactly(name):
    """At the size its weights were made for (Swin V2: 256 x 256), with no
    opaque row: params = sum(p.numel()) = torchvision's num_params, MACs =
    FlopCounterMode / 2 on the meta device, and torchvision's GFLOPS (its
    weights' _ops, MACs to three decimals); the papers' figures at 224."""
    meta = tv.models.get_model_weights(name).DEFAULT.meta
    side = meta["min_size"][0]
    model, done, report = imported_meta(name, (3, side, side))
    assert "opaque" not in done.text
    kinds = {op.kind.name for row in report.rows[1:] for op in row.ops}
    assert kinds & WINDOW_KINDS
    params, macs = report.totals["params"], report.totals["macs"]
    assert params == done.params == sum(p.numel() for p in model.parameters())
    assert params == meta["num_params"]
    assert macs == meta_macs(model, (3, side, side))
    assert round(macs / 1e9, 3) == meta["_ops"]
    if name in PAPERS:
        assert (round(params / 1e6), round(macs / 1e9, 1)) == PAPERS[name]


# -- small whole models with weights: state_dict, outputs, check ---------------------


def small_swin(v2: bool):
    """Two stages; a 3 x 3 window (V1) on 8 x 8 then 4 x 4 maps, or a 3 x 3 one
    (V2) on 10 x 10 then 5 x 5 maps: padded windows, kept and dropped shifts."""
    extra = dict(block=tv_swin.SwinTransformerBlockV2,
                 downsample_layer=tv_swin.PatchMergingV2) if v2 else {}
    return tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2],
                                   num_heads=[1, 2], window_size=[3, 3], num_classes=10,
                                   **extra).eval()


def small_maxvit():
    return tv_maxvit.MaxVit(input_size=(32, 32), stem_channels=16, partition_size=2,
                            block_channels=[16, 32], block_layers=[2, 1], head_dim=8,
                            stochastic_depth_prob=0.0, num_classes=10).eval()


def same_function(original, shape, tmp_path=None):
    """The imported spec's model and (given ``tmp_path``) its Python export
    load the original's state_dict strictly and agree; check agrees."""
    from archcalc.torch.check import run_check
    done = importer.import_module(original, shape, label="small", strict=True)
    assert "opaque" not in done.text
    spec = loads(done.text, file="small")
    built = spec.build().eval()
    built.load_state_dict(original.state_dict(), strict=True)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected = original(x)
        assert (built(x) - expected).abs().max().item() <= 1e-5
    if tmp_path is not None:
        exported = exported_model(built, tmp_path)
        exported.load_state_dict(original.state_dict(), strict=True)
        with torch.no_grad():
            assert (exported(x) - expected).abs().max().item() <= 1e-5
    result = run_check(spec)
    failed = [c.what for c in result.totals if c.ok is False]
    failed += [r.name for r in result.rows if not r.ok]
    assert not failed, failed


def exported_model(built, tmp_path):
    """`archcalc export --to python` of a built model, loaded and made: the
    window kinds' classes are copied into the file by their source."""
    import importlib.util
    from archcalc.torch.export import to_python
    path = tmp_path / "exported_small.py"
    path.write_text(to_python(built))
    module_spec = importlib.util.spec_from_file_location("exported_small", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, "Small")().eval()


@pytest.mark.parametrize("make,shape", [(lambda: small_swin(False), (3, 32, 32)),
                                        (lambda: small_swin(False), (3, 36, 20)),
                                        (lambda: small_swin(True), (3, 40, 40)),
                                        (small_maxvit, (3, 32, 32))],
                         ids=["swin_v1", "swin_v1_9x5", "swin_v2", "maxvit"])
def test_small_model_loads_the_state_dict_and_agrees(make, shape, tmp_path):
    """A 9 x 5 map (from 36 x 20): size = [h, w] on every row, windows padded,
    an odd map merged."""
    torch.manual_seed(0)
    same_function(make(), shape, tmp_path)


@pytest.mark.slow
def test_swin_t_loads_the_state_dict_and_check_agrees():
    torch.manual_seed(0)
    same_function(tv.models.swin_t(weights=None).eval(), (3, 224, 224))


# -- each kind against torchvision's module --------------------------------------------


def engine(kind_name, args, x):
    kind = lookup(kind_name)
    a = kind.read_args({k: v for k, v in args.items() if v is not None}, {})
    y = kind.output_shape(a, x)
    return kind, a, y, kind.params(a, x), kind.macs(a, x, y)


def mapped(module, x, x_torch, args=()):
    """The row the module's kind maps it to, as the importer calls from_torch."""
    call = SimpleNamespace(x=x, x_torch=x_torch, args=args, kwargs={})
    [(name, args)] = importer.mappers._mapper_for(module)(call, module)
    return name, args


def counted(module, inp) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(inp)
    return counter.get_total_flops() // 2


def agree(ours, theirs, x_ours, x_theirs, atol=1e-5):
    ours.load_state_dict(theirs.state_dict(), strict=True)
    with torch.no_grad():
        a, b = ours.eval()(x_ours), theirs.eval()(x_theirs)
    assert torch.allclose(a, b.reshape(a.shape), atol=atol), (a - b.reshape(a.shape)).abs().max()


@st.composite
def swin_case(draw, v2):
    heads = draw(st.integers(1, 3))
    window = [draw(st.integers(2 if v2 else 1, 4)) for _ in range(2)]
    shift = [draw(st.integers(0, w - 1)) for w in window]
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    return heads, heads * draw(st.integers(1, 4)), window, shift, h, w, draw(st.booleans())


FEW = settings(max_examples=12, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_window_attention_is_torchvision_s(v2):
    cls = tv_swin.ShiftedWindowAttentionV2 if v2 else tv_swin.ShiftedWindowAttention

    @FEW
    @given(swin_case(v2))
    def check(case):
        heads, dim, window, shift, h, w, proj_bias = case
        theirs = cls(dim, window, shift, heads, proj_bias=proj_bias)
        name, args = mapped(theirs, (h * w, dim), (h, w, dim))
        assert name == ("window_attention_v2" if v2 else "window_attention")
        kind, a, y, params, macs = engine(name, args, (h * w, dim))
        assert params == sum(p.numel() for p in theirs.parameters())
        ours = kind.build(a, (h * w, dim))
        x = torch.randn(2, h, w, dim)
        agree(ours, theirs, x.reshape(2, h * w, dim), x)
        assert macs == counted(theirs, x[:1])    # the bias MLP (V2) once, at batch 1
        bias_mlp = kind.bias_macs(a) if v2 else 0
        assert 2 * macs - bias_mlp == counted(theirs, x)

    check()


def test_a_shift_is_dropped_where_the_map_fits_one_window():
    """torchvision drops the shift on an axis whose padded size is one window:
    the same output with and without it, and the same figures."""
    kind = lookup("window_attention")
    a = kind.read_args({"heads": 2, "window": 7, "shift": 3}, {})
    assert kind.geometry(a, (49, 8))[3] == (0, 0)
    assert kind.geometry(a, (196, 8))[3] == (3, 3)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_patch_merging_is_torchvision_s(v2):
    cls = tv_swin.PatchMergingV2 if v2 else tv_swin.PatchMerging

    @FEW
    @given(st.integers(1, 8), st.integers(1, 9), st.integers(1, 9))
    def check(dim, h, w):
        theirs = cls(dim)
        name, args = mapped(theirs, (h * w, dim), (h, w, dim))
        assert (name, args["post_norm"]) == ("patch_merging", v2)
        kind, a, y, params, macs = engine(name, args, (h * w, dim))
        assert y == (((h + 1) // 2) * ((w + 1) // 2), 2 * dim)
        assert params == sum(p.numel() for p in theirs.parameters())
        x = torch.randn(2, h, w, dim)
        agree(kind.build(a, (h * w, dim)), theirs, x.reshape(2, h * w, dim), x)
        assert 2 * macs == counted(theirs, x)

    check()


@FEW
@given(st.integers(1, 3), st.integers(1, 3), st.integers(2, 3), st.integers(1, 3),
       st.integers(1, 2), st.booleans())
def test_maxvit_partitions_are_torchvision_s(heads, head_dim, p, gh, gw, grid):
    """Partition (block or grid order), attention, departition: each row from
    torchvision's module, the chain's output torchvision's."""
    # torchvision's grid attention partitions a square map (its grid size's height)
    dim, size = heads * head_dim * 2, (gh * p, (gh if grid else gw) * p)
    n = size[0] * size[1]
    split = size[0] // p if grid else p   # grid: partition by H/P, then swap the groups
    theirs_attn = tv_maxvit.RelativePositionalMultiHeadAttention(dim, dim // heads, p * p)
    rows = [mapped(tv_maxvit.WindowPartition(), (dim, *size), (dim, *size), (None, split))]
    if grid:
        swap = tv_maxvit.SwapAxes(-2, -3)
        rows.append(mapped(swap, (n, dim), (n // (split * split), split * split, dim)))
    rows.append(mapped(theirs_attn, (n, dim), (n // (p * p), p * p, dim)))
    if grid:
        rows.append(mapped(swap, (n, dim), (n // (p * p), p * p, dim)))
    rows.append(mapped(tv_maxvit.WindowDepartition(), (n, dim), (n // (split * split),
                                                                 split * split, dim),
                       (None, split, size[0] // split, size[1] // split)))
    shape, modules = (dim, *size), []
    for name, args in rows:
        kind, a, y, params, macs = engine(name, args, shape)
        modules.append(kind.build(a, shape))
        if name == "partition_attention":
            assert params == sum(p.numel() for p in theirs_attn.parameters())
            x = torch.randn(2, n // (p * p), p * p, dim)
            assert macs == counted(theirs_attn, x[:1])
            agree(modules[-1], theirs_attn, x.reshape(2, n, dim), x)
        shape = y
    assert shape == (dim, *size)
    x = torch.randn(2, dim, *size)
    with torch.no_grad():
        t = tv_maxvit.WindowPartition()(x, split)
        t = tv_maxvit.SwapAxes(-2, -3)(t) if grid else t
        t = theirs_attn(t)
        t = tv_maxvit.SwapAxes(-2, -3)(t) if grid else t
        expected = tv_maxvit.WindowDepartition()(t, split, size[0] // split, size[1] // split)
        assert torch.allclose(torch.nn.Sequential(*modules)(x), expected, atol=1e-5)


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("row,words", [
    ('{name = "w", window_attention = 2, window = 7, size = [4, 5]}', ["w", "size", "20"]),
    ('{name = "w", window_attention = 3, window = 7}', ["w", "divide", "heads=3"]),
    ('{name = "w", window_attention = 2, window = 4, shift = 4}', ["w", "shift", "window"]),
    ('{name = "w", window_attention_v2 = 2, window = 1}', ["w", "window"]),
    ('{name = "m", patch_merging = true, size = [3, 3]}', ["m", "size"]),
    ('{name = "p", partition_attention = 2, window = 3}', ["p", "groups of 3*3"]),
])
def test_bad_arguments_are_one_line(tmp_path, row, words):
    path = tmp_path / "bad.toml"
    path.write_text(f'[model]\nname = "bad"\ninput = [8, 4, 4]\nlayers = [\n'
                    f'  {{name = "t", tokens = true}},\n  {row},\n]\n')
    done = subprocess.run([sys.executable, "-m", "archcalc", "table", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "bad.toml" in line and all(w in line for w in words), line


def test_window_partition_refuses_a_map_it_does_not_tile():
    from archcalc.errors import SpecError
    with pytest.raises(SpecError, match="height 10 does not divide into windows of 4"):
        analyze(loads('[model]\nname = "p"\ninput = [4, 10, 8]\n'
                      'layers = [{name = "p", window_partition = 4}]\n'))
