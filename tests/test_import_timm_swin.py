"""timm's Swin families import as derived rows (no opaque row): the shifted
window attention of SwinTransformerBlock, SwinTransformerV2Block and
SwinTransformerV2CrBlock (a method of the block, ``_attn`` /
``_shifted_window_attn``: roll, pad, window partition, the block's attention
module, window reverse, crop, roll back) is one window_attention,
window_attention_v2 or window_attention_cr row named by the block's ``attn``;
timm's PatchMerging is a patch_merging row; the NHWC head's mean a token pool.

Every figure is PyTorch's: params == sum(p.numel()), MACs == FlopCounterMode / 2
on the meta device, and the spec's built model loads timm's state_dict (all
its keys; archcalc's modules keep a relative position index that timm does
not save) and computes timm's outputs.
"""
import copy

import pytest

from archcalc.analysis import analyze
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from timm.models import swin_transformer as v1  # noqa: E402
from timm.models import swin_transformer_v2 as v2  # noqa: E402
from timm.models import swin_transformer_v2_cr as cr  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from archcalc.torch.importer import Unsupported  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(patch_size=4, num_classes=5, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
            window_size=4, mlp_ratio=2.0)
# buffers timm does not save (persistent=False) that archcalc's modules keep
UNSAVED = ("relative_position_index", "relative_coords_table")


def meta_macs(model, x_shape) -> int:
    model = copy.deepcopy(model).to("meta").requires_grad_(False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *x_shape, device="meta"))
    return counter.get_total_flops() // 2


def randomized(model):
    """Weights that make a wrong wiring visible (timm zeroes biases and tables)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def same_outputs(original, built, x):
    found = built.load_state_dict(original.state_dict(), strict=False)
    assert not found.unexpected_keys
    assert all(k.endswith(UNSAVED) for k in found.missing_keys), found.missing_keys
    with torch.no_grad():
        expected = original(x)
        scale = max(1.0, expected.abs().max().item())     # float32's rounding, relative
        assert (built.eval()(x) - expected).abs().max().item() <= 1e-5 * scale


def imported_exactly(model, side):
    """Imported strictly (no opaque row): the spec's text, params and MACs PyTorch's."""
    shape = (3, side, side)
    done = importer.import_module(model, shape, strict=True)
    assert "opaque" not in done.text
    report = analyze(loads(done.text, file="swin"))
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == meta_macs(model, shape)
    return done.text


@pytest.mark.parametrize("make, kind", [
    (lambda: v1.SwinTransformer(img_size=64, **TINY), "window_attention ="),
    (lambda: v2.SwinTransformerV2(img_size=64, pretrained_window_sizes=(0, 3), **TINY),
     "pretrained_window = 3"),
    (lambda: cr.SwinTransformerV2Cr(img_size=(64, 64), extra_norm_stage=True,
                                    init_values=None, **TINY), "window_attention_cr ="),
])
def test_a_tiny_swin_computes_the_same(make, kind):
    """Swin, Swin V2 (q_bias and v_bias, a pretrained window for its position
    coordinates) and Swin V2-cr at 64 x 64 (maps of 16 x 16 and 8 x 8 in windows
    of 4, every second block shifted by 2): no opaque row, params and MACs
    PyTorch's, and built from the spec with timm's weights, timm's outputs."""
    model = randomized(make())
    text = imported_exactly(model, 64)
    assert kind in text and "shift = 2" in text and "patch_merging" in text
    same_outputs(model, loads(text, file="swin").build(), torch.randn(2, 3, 64, 64))


def test_an_exported_tiny_swin_v2_cr_computes_the_same(tmp_path):
    """archcalc export --to python copies CrWindowAttention by its source (with
    roll_first: a 40 x 40 input): the written model loads timm's state_dict."""
    import importlib.util

    from archcalc.torch.export import to_python
    model = randomized(cr.SwinTransformerV2Cr(img_size=(40, 40), init_values=None, **TINY))
    done = importer.import_module(model, (3, 40, 40), strict=True)
    path = tmp_path / "exported.py"
    path.write_text(to_python(loads(done.text, file="swin").build(), "Exported"))
    spec = importlib.util.spec_from_file_location("exported", path)
    exported = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exported)
    same_outputs(model, exported.Exported(), torch.randn(2, 3, 40, 40))


def test_a_window_as_large_as_the_map_drops_the_shift():
    """timm clips the window to a map it covers and drops the shift there (the
    8 x 8 and 4 x 4 maps in windows of 8): the row's window is the map's."""
    model = randomized(v1.SwinTransformer(img_size=64, **{**TINY, "window_size": 8,
                                                          "depths": (2, 2, 2),
                                                          "num_heads": (1, 2, 4)}))
    text = imported_exactly(model, 64)
    assert "window = 4" in text and "window = 8" in text and "shift = 4" in text
    same_outputs(model, loads(text, file="swin").build(), torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("make", [
    lambda: v1.SwinTransformer(img_size=40, qkv_bias=False, **TINY),
    lambda: v2.SwinTransformerV2(img_size=40, qkv_bias=False, **TINY),
    lambda: cr.SwinTransformerV2Cr(img_size=(40, 40), init_values=None, **TINY),
])
def test_a_shifted_map_in_part_windows_rolls_before_it_pads(make):
    """timm rolls the map before it pads it to whole windows (torchvision, and
    the kind by default, after): where a shifted block's map does not divide
    into windows (10 x 10 and 5 x 5 in windows of 4) the row says roll_first,
    and built, computes timm's outputs (Swin and Swin V2 without qkv biases)."""
    model = randomized(make())
    text = imported_exactly(model, 40)
    assert "roll_first = true" in text
    same_outputs(model, loads(text, file="swin").build(), torch.randn(2, 3, 40, 40))


def test_a_head_width_other_than_the_share_is_kept_whole():
    """timm's Swin with head_dim set (heads of 12 on a width of 16) is no
    window_attention: refused by --strict, and without it each block is kept
    whole (an opaque row, measured), with the totals still PyTorch's."""
    model = randomized(v1.SwinTransformer(img_size=64, head_dim=12, **TINY))
    with pytest.raises(Unsupported, match="head width other than D/heads"):
        importer.import_module(model, (3, 64, 64), strict=True)
    done = importer.import_module(model, (3, 64, 64))
    assert 'opaque = "timm.models.swin_transformer.SwinTransformerBlock"' in done.text
    report = analyze(loads(done.text, file="swin"))
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == meta_macs(model, (3, 64, 64))


@pytest.mark.slow
def test_the_swin_tiny_of_timm_imports_exactly_on_meta():
    """timm's swin_tiny_patch4_window7_224, swinv2_tiny_window8_256 and
    swinv2_cr_tiny_224 at a smaller input (their windows clipped at the last
    stage), on the meta device: no opaque row, params and MACs PyTorch's."""
    for name, side in (("swin_tiny_patch4_window7_224", 112), ("swinv2_tiny_window8_256", 128),
                       ("swinv2_cr_tiny_224", 128)):
        with importer.empty_weights():
            model = timm.create_model(name, pretrained=False, img_size=side).eval()
        imported_exactly(model, side)
