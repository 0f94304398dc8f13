"""timm's transformers import as derived rows (no opaque row): timm's Attention
(ViT, DeiT and their kin) and BEiT's map to the attention kind, their class,
distillation and register tokens to class_token rows, their average pool over
the patch tokens to skip_tokens + token_pool.

Every figure is PyTorch's: params == sum(p.numel()), MACs == FlopCounterMode / 2
on the meta device (which counts F.scaled_dot_product_attention as its two
products), saved bytes as saved_tensors_hooks sees them, and the spec's built
model loads the original's state_dict strictly and computes its outputs.
"""
import copy
import subprocess
import sys
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.layers import kinds
from archcalc.layers.from_torch import NoMapping
from archcalc.spec.loader import loads

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from timm.layers.attention import Attention  # noqa: E402
from timm.models import beit  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from archcalc.torch.measure import SavedBytes  # noqa: E402

ATTENTION = kinds()["attention"]


def meta_macs(model, x_shape) -> int:
    model = copy.deepcopy(model).to("meta").requires_grad_(False)   # (FlopCounterMode's module
    counter = FlopCounterMode(display=False)   # tracker fails on an expanded parameter otherwise)
    with counter, torch.no_grad():
        model(torch.zeros(1, *x_shape, device="meta"))
    return counter.get_total_flops() // 2


def randomized(model):
    """Weights that make a wrong wiring visible (timm zeroes biases and tables)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def same_outputs(original, built, x):
    built.load_state_dict(original.state_dict(), strict=True)
    with torch.no_grad():
        expected = original.eval()(x)
        scale = max(1.0, expected.abs().max().item())     # float32's rounding, relative
        assert (built.eval()(x) - expected).abs().max().item() <= 1e-5 * scale


def mapped(module, n, d):
    """The row the attention kind's from_torch gives a module on N x D tokens."""
    call = SimpleNamespace(x=(n, d), x_torch=(n, d), args=(object(),), kwargs={})
    [(kind, args)] = ATTENTION.from_torch(call, module)
    assert kind == "attention"
    return ATTENTION.read_args(args, {})


def saved_bytes(module, n, d, batch=2):
    module.train()
    with SavedBytes(module) as saved:
        module(torch.randn(batch, n, d, requires_grad=True))
    return saved.total


def engine_saved(a, n, d, batch=2):
    s = ATTENTION.saved(a, (n, d), (n, d))
    return batch * (4 * n * d * s.input + sum(e * (b or 4) for e, b in s.extra))


# -- one attention module against the kind ----------------------------------


@settings(max_examples=12, deadline=None, database=None)
@given(heads=st.integers(1, 4), head_dim=st.integers(1, 8), extra=st.sampled_from([0, 0, 3]),
       n=st.integers(1, 20), qkv_bias=st.booleans(), proj_bias=st.booleans(),
       qk_norm=st.booleans(), scale_norm=st.booleans())
def test_timm_attention_is_the_attention_kind(heads, head_dim, extra, n, qkv_bias, proj_bias,
                                              qk_norm, scale_norm):
    """timm's Attention (width D, heads of head_dim, D = heads*head_dim or not):
    the row's params, MACs and saved bytes are the module's, and the module it
    builds loads timm's state_dict strictly and computes the same output."""
    d = heads * head_dim + extra
    norm = nn.LayerNorm if qk_norm or scale_norm else None
    module = randomized(Attention(d, heads, attn_head_dim=head_dim if extra else None,
                                  qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm,
                                  scale_norm=scale_norm, norm_layer=norm))
    a = mapped(module, n, d)
    assert ATTENTION.params(a, (n, d)) == sum(p.numel() for p in module.parameters())
    assert ATTENTION.macs(a, (n, d), (n, d)) == meta_macs(module, (n, d))
    # within archcalc check's tolerance: a copy before the projection depends on
    # the strides the CPU kernel picks (none for a 1-token, 1-wide head)
    measured = saved_bytes(module, n, d)
    assert abs(engine_saved(a, n, d) - measured) <= 0.1 * measured
    same_outputs(module, ATTENTION.build(a, (n, d)), torch.randn(2, n, d))


@settings(max_examples=8, deadline=None, database=None)
@given(heads=st.integers(1, 4), head_dim=st.integers(1, 8), wh=st.integers(1, 4),
       ww=st.integers(1, 4), relative=st.booleans(), bias=st.booleans())
def test_beit_attention_is_the_attention_kind(heads, head_dim, wh, ww, relative, bias):
    """BEiT's attention (q_bias and v_bias, no key bias; a relative position
    bias per head over the window and the class token): params, MACs (the
    bias is a gather: no MAC), the same output with its state_dict."""
    d, n = heads * head_dim, wh * ww + 1
    module = randomized(beit.Attention(d, heads, qkv_bias=bias,
                                       window_size=(wh, ww) if relative else None))
    a = mapped(module, n, d)
    assert (a.keys, a.window is not None) == ("beit", relative)
    assert ATTENTION.params(a, (n, d)) == sum(p.numel() for p in module.parameters())
    assert ATTENTION.macs(a, (n, d), (n, d)) == meta_macs(module, (n, d))
    same_outputs(module, ATTENTION.build(a, (n, d)), torch.randn(2, n, d))


@settings(max_examples=8, deadline=None, database=None)
@given(heads=st.integers(1, 3), head_dim=st.integers(1, 6), n=st.integers(1, 12),
       latent=st.integers(1, 3), mlp_ratio=st.sampled_from([None, 2.0]), bias=st.booleans(),
       qk_norm=st.booleans(), pool=st.sampled_from(["token", "avg", ""]))
def test_attention_pooling_is_the_attention_pool_kind(heads, head_dim, n, latent, mlp_ratio,
                                                      bias, qk_norm, pool):
    """timm's AttentionPoolLatent (SigLIP's map head): a latent query attends
    to the tokens, then x + MLP(LayerNorm(x)); params, MACs, saved bytes and
    the same output with its state_dict."""
    from timm.layers.attention_pool import AttentionPoolLatent
    d = heads * head_dim
    module = randomized(AttentionPoolLatent(d, num_heads=heads, latent_len=latent,
                                            mlp_ratio=mlp_ratio or 4.0, qkv_bias=bias,
                                            qk_norm=qk_norm, pool_type=pool))
    if mlp_ratio is None:
        module.mlp = None
    kind = kinds()["attention_pool"]
    call = SimpleNamespace(x=(n, d), x_torch=(n, d), args=(object(),), kwargs={})
    [(name, args)] = kind.from_torch(call, module)
    a = kind.read_args(args, {})
    assert kind.params(a, (n, d)) == sum(p.numel() for p in module.parameters())
    y = kind.output_shape(a, (n, d))
    assert kind.macs(a, (n, d), y) == meta_macs(module, (n, d))
    built = kind.build(a, (n, d))
    x = torch.randn(2, n, d)
    assert tuple(built(x).shape[1:]) == tuple(y)
    same_outputs(module, built, x)
    # within 15%: with qk_norm, several heads and latent tokens and no MLP the
    # CPU kernel's strides make copies the kind leaves out (up to 14% measured
    # over heads 1-3, head_dim 1-4, N 1-5, L 1-3 at batch 2; the rest within 10%)
    measured = saved_bytes(module, n, d)
    s = kind.saved(a, (n, d), y)
    calc = 2 * (4 * n * d + sum(e * (b or 4) for e, b in s.extra))
    assert abs(calc - measured) <= 0.15 * measured


def test_what_the_kind_cannot_say_is_refused_by_name():
    gated = Attention(16, 2, gated=True)
    with pytest.raises(NoMapping, match="gated"):
        mapped(gated, 5, 16)
    call = SimpleNamespace(x=(5, 16), x_torch=(5, 16), args=(object(), object()), kwargs={})
    with pytest.raises(NoMapping, match="mask"):
        ATTENTION.from_torch(call, Attention(16, 2))
    with pytest.raises(NoMapping, match="RmsNorm"):
        from timm.layers import RmsNorm
        mapped(Attention(16, 2, qk_norm=True, norm_layer=RmsNorm), 5, 16)
    with pytest.raises(NoMapping, match="shared relative position bias"):
        ATTENTION.from_torch(call, beit.Attention(16, 2))


@pytest.mark.parametrize("layer, message", [
    ('{attention = 2, qk_norm = true}', 'keys = "multihead" takes no qk_norm'),
    ('{attention = 2, keys = "qkv", window = 2}', 'keys = "qkv" takes no window'),
    ('{attention = 2, keys = "beit", window = [2, 2]}', "are 5 tokens, but there are 17"),
    ('{attention = 3}', "does not divide into 3 heads"),
    ('{token_pool = "first", index = 17}', "no token 17"),
    ('{skip_tokens = 17}', "leave none after the first 17"),
])
def test_bad_arguments_are_one_line(layer, message):
    text = f'''[model]
name = "t"
input = [3, 8, 8]
layers = [{{conv = 8, kernel = 2, stride = 2}}, {{tokens = true}}, {{class_token = true}},
          {layer}]
'''
    with pytest.raises(SpecError, match=message) as e:
        analyze(loads(text, file="t.toml"))
    assert "Received:" in str(e.value) or "divide" in str(e.value)


# -- whole timm models ----------------------------------------------------------


MODELS = {   # name: (params, rows that must be there)
    "vit_tiny_patch16_224": (5_717_416, {"attention", "class_token", "token_pool"}),
    "deit_tiny_patch16_224": (5_717_416, {"attention"}),
    "deit_tiny_distilled_patch16_224": (5_910_800, {"attention", "class_token", "add"}),
    "vit_small_patch14_reg4_dinov2": (22_057_344, {"attention", "layer_scale"}),
    "vit_base_patch16_reg4_gap_256": (86_615_272, {"attention", "skip_tokens"}),
    "beit_base_patch16_224": (86_530_984, {"attention", "layer_scale", "skip_tokens"}),
    "vit_base_patch16_siglip_224": (92_884_224, {"attention", "attention_pool"}),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_timm_transformer_imports_exactly(name):
    """No opaque row (strict); params == sum(numel), MACs == FlopCounterMode/2."""
    with importer.empty_weights():
        model = timm.create_model(name, pretrained=False).eval()
    shape = model.pretrained_cfg["input_size"]
    done = importer.import_module(model, shape, label=name, strict=True)
    report = analyze(loads(done.text, file=name))
    params, kinds_there = MODELS[name]
    assert report.totals["params"] == done.params == params == sum(
        p.numel() for p in model.parameters())
    assert report.totals["macs"] == meta_macs(model, shape)
    assert kinds_there <= {r.type.split("+")[0] for r in report.rows}


TINY_VITS = st.fixed_dictionaries({
    "embed_dim": st.sampled_from([24, 48]), "depth": st.integers(1, 2),
    "num_heads": st.sampled_from([1, 2, 3]), "class_token": st.booleans(),
    "reg_tokens": st.integers(0, 2), "no_embed_class": st.booleans(),
    "qk_norm": st.booleans(), "qkv_bias": st.booleans(),
    "init_values": st.sampled_from([None, 0.1]), "global_pool": st.sampled_from(["avg", "token"]),
})


@settings(max_examples=6, deadline=None, database=None)
@given(config=TINY_VITS)
def test_a_tiny_vit_computes_the_same(config):
    """timm's VisionTransformer at 32 x 32 (patches of 8): class and register
    tokens, position embedding before or after them, qk_norm, layer scale, a
    token or average pool: imported, built, timm's state_dict loaded strictly,
    the same outputs; params and MACs PyTorch's."""
    if config["global_pool"] == "token" and not config["class_token"]:
        config["global_pool"] = "avg"
    model = randomized(VisionTransformer(img_size=32, patch_size=8, num_classes=5,
                                         mlp_ratio=2.0, **config)).eval()
    done = importer.import_module(model, (3, 32, 32), strict=True)
    report = analyze(loads(done.text, file="vit"))
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == meta_macs(model, (3, 32, 32))
    same_outputs(model, loads(done.text, file="vit").build(), torch.randn(2, 3, 32, 32))


def test_a_tiny_beit_computes_the_same():
    model = randomized(beit.Beit(img_size=32, patch_size=8, num_classes=5, embed_dim=48,
                                 depth=2, num_heads=3, mlp_ratio=2.0, init_values=0.1,
                                 use_abs_pos_emb=False, use_rel_pos_bias=True)).eval()
    done = importer.import_module(model, (3, 32, 32), strict=True)
    assert "window = 4" in done.text and 'keys = "beit"' in done.text
    report = analyze(loads(done.text, file="beit"))
    assert report.totals["params"] == sum(p.numel() for p in model.parameters())
    assert report.totals["macs"] == meta_macs(model, (3, 32, 32))
    same_outputs(model, loads(done.text, file="beit").build(), torch.randn(2, 3, 32, 32))


def test_an_exported_tiny_beit_computes_the_same(tmp_path):
    """archcalc export --to python copies BeitAttention, TokenPool and
    SkipTokens by their source: the written model loads timm's state_dict."""
    import importlib.util

    from archcalc.torch.export import to_python
    model = randomized(beit.Beit(img_size=32, patch_size=8, num_classes=5, embed_dim=24,
                                 depth=1, num_heads=2, init_values=0.1, use_abs_pos_emb=False,
                                 use_rel_pos_bias=True)).eval()
    done = importer.import_module(model, (3, 32, 32), strict=True)
    path = tmp_path / "exported.py"
    path.write_text(to_python(loads(done.text, file="beit").build(), "Exported"))
    spec = importlib.util.spec_from_file_location("exported", path)
    exported = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exported)
    same_outputs(model, exported.Exported(), torch.randn(2, 3, 32, 32))


def test_deit_distilled_computes_the_same():
    """DeiT-Ti distilled (Touvron et al. 2021): a class and a distillation token,
    two heads averaged at inference; 5,910,800 params at full size."""
    model = randomized(timm.create_model("deit_tiny_distilled_patch16_224",
                                         pretrained=False)).eval()
    done = importer.import_module(model, (3, 224, 224), strict=True)
    assert done.params == 5_910_800
    same_outputs(model, loads(done.text, file="deit").build(), torch.randn(1, 3, 224, 224))


TINY_VIT_FILE = '''
from timm.models.vision_transformer import VisionTransformer


def make():
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3,
                             num_classes=10, reg_tokens=2, global_pool="avg", qk_norm=True)
'''


def test_check_agrees_on_an_imported_tiny_vit(tmp_path):
    """archcalc check of the imported spec: every figure agrees (shapes, params,
    MACs by fvcore and FlopCounterMode, forward and saved bytes)."""
    (tmp_path / "tiny_vit.py").write_text(TINY_VIT_FILE)
    spec = tmp_path / "tiny_vit.toml"
    run = [sys.executable, "-m", "archcalc"]
    subprocess.run(run + ["import", f"{tmp_path / 'tiny_vit.py'}:make", "--strict", "--input",
                          "3x32x32", "-o", str(spec)], check=True, capture_output=True,
                   timeout=300)
    out = subprocess.run(run + ["check", str(spec), "--batch", "2"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "all figures agree" in out.stdout
