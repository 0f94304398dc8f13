"""timm's EVA family (timm.models.eva: EVA, EVA-02, the ROPE-ViTs, Perception
Encoder, DINOv3): its attention, EvaAttention or AttentionRope handed the
model's rotary table, is one rope_attention row. On small configurations:
params (sum of numel) and MACs (FlopCounterMode / 2 on the meta device) equal
PyTorch's, and the built spec loads timm's state_dict and computes its
outputs (within 1e-5)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from archcalc.layers import lookup  # noqa: E402
from archcalc.spec.loader import loads  # noqa: E402
from archcalc.torch import importer  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(patch_size=7, embed_dim=32, depth=2, num_heads=2, num_classes=5)


def eva(img_size=28, **kwargs):
    from timm.models.eva import Eva
    torch.manual_seed(0)
    return Eva(img_size=img_size, **{**SMALL, **kwargs}).eval()


def attention_rows(report) -> list:
    return [r for r in report.rows[1:] if r.type == "rope_attention"]


CASES = {
    # EVA-02 B/L: separate q, k, v (q and v biases), SwiGLU with a norm, a
    # norm on the heads' output, the table rescaled to a reference grid
    "eva02": dict(qkv_fused=False, swiglu_mlp=True, scale_mlp=True, scale_attn_inner=True,
                  use_rot_pos_emb=True, ref_feat_shape=(2, 2)),
    # EVA-02 Ti/S: one qkv projection with q_bias and v_bias, a packed GluMlp
    "eva02_fused": dict(swiglu_mlp=True, use_rot_pos_emb=True, ref_feat_shape=(3, 3)),
    # EVA: no rotary table at all
    "eva": dict(use_rot_pos_emb=False),
    # ROPE-ViT / Perception Encoder: AttentionRope, 'xy' grid, offset, layer scale
    "rope_vit": dict(attn_type="rope", use_rot_pos_emb=True, rope_grid_indexing="xy",
                     rope_temperature=100.0, rope_grid_offset=1.0, init_values=1e-5,
                     qkv_bias=True),
    # AttentionRope with grouped k/v heads (qkv apart), RMS q/k norms
    "grouped": dict(attn_type="rope", use_rot_pos_emb=True, qkv_fused=False, num_heads=4,
                    num_kv_heads=2, qk_norm=True, norm_layer=timm.layers.RmsNorm,
                    use_fc_norm=False, global_pool="token"),
    # DINOv3: centred coordinates, rotation of the halves, register tokens
    "dinov3": dict(use_rot_pos_emb=True, rope_type="dinov3", rope_temperature=100.0,
                   rope_rotate_half=True, num_reg_tokens=4, init_values=1e-5),
    # DINOv3 as timm builds it: the table made in the forward at the input's
    # size (its grid read from the call that builds the coordinates)
    "dinov3_dynamic": dict(use_rot_pos_emb=True, rope_type="dinov3", rope_temperature=100.0,
                           rope_rotate_half=True, num_reg_tokens=4, dynamic_img_size=True,
                           qkv_bias=False, use_abs_pos_emb=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_eva_attention_is_one_rope_attention_row_and_computes_the_same(case):
    model = eva(**CASES[case])
    done, report = imported(model, (3, 28, 28))
    assert len(attention_rows(report)) == 2
    assert "opaque" not in done.text
    same_function(model, (3, 28, 28), done)


def test_a_grid_of_other_height_and_width_rotates_as_timm():
    """4 x 6 patches ('xy' indexing swaps the axes of the coordinates)."""
    for indexing in ("ij", "xy"):
        model = eva(img_size=(28, 42), use_rot_pos_emb=True, rope_grid_indexing=indexing,
                    ref_feat_shape=(3, 3))
        done, report = imported(model, (3, 28, 42))
        assert len(attention_rows(report)) == 2 and "grid = [4, 6]" in done.text
        same_function(model, (3, 28, 42), done)


def test_rope_attention_figures():
    """MACs: q N*D*A, k and v N*D*2*Akv, 2*N^2*A, projection N*A*D; params of
    EVA's q and v biases (no key bias) and a RMS q/k norm."""
    kind = lookup("rope_attention")
    a = kind.read_args({"heads": 4, "kv_heads": 2, "qkv": "separate", "qk_norm": "rms",
                        "grid": [2, 3]}, {})
    x = (7, 32)     # a class token and 2 x 3 patches
    assert kind.output_shape(a, x) == x
    inner, kv = 32, 16
    assert kind.macs(a, x, x) == 7 * 32 * (inner + 2 * kv) + 2 * 7 * 7 * inner + 7 * inner * 32
    assert kind.params(a, x) == 32 * (inner + 2 * kv) + (inner + kv) + inner * 32 + 32 + 2 * 8


def test_a_learned_rotary_table_has_no_kind():
    """RoPE-Mixed's frequencies are parameters of the model's rope module, one
    set for every block: no row can hold them, so strict import refuses."""
    model = eva(attn_type="rope", use_rot_pos_emb=True, rope_type="mixed")
    with pytest.raises(importer.Unsupported):
        importer.import_module(model, (3, 28, 28), strict=True)


def test_the_spec_names_timms_state_dict_keys():
    model = eva(**CASES["eva02_fused"])
    done, report = imported(model, (3, 28, 28))
    built = loads(done.text, file="m").build()
    keys = set(built.state_dict())
    assert {"blocks.0.attn.qkv.weight", "blocks.0.attn.q_bias", "blocks.0.attn.v_bias",
            "blocks.1.attn.proj.bias"} <= keys
    assert "blocks.0.attn.rope" not in keys      # the table is not saved, as timm's
    assert set(rows(report).values()) >= {"rope_attention"}


@pytest.mark.slow
@pytest.mark.parametrize("name, params", [("eva02_tiny_patch14_224", 5_502_144),
                                          ("vit_small_patch16_rope_224", 21_984_232),
                                          ("vit_small_patch16_dinov3", 21_586_944)])
def test_timm_eva_models_import_exactly_with_no_opaque_row(name, params):
    from tests.test_import_functional import timm_meta
    done, report = imported(timm_meta(name), (3, 224, 224), f"timm:{name}")
    assert done.params == params
    assert "opaque" not in done.text and attention_rows(report)
