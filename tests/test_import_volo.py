"""timm's VOLO imports with no opaque row: its OutlookAttention as an
``outlook_attention`` row, its Attention (on a channels-last map) as
``attention``, its ClassAttention (q and one kv Linear) as ``class_attention``
with ``kv = true``, the 1 x H x W x D position embedding as
``position_embedding`` stored so, and the token-labeling head's
``aux.max(1)[0]`` as ``token_pool = "max"``. ``imported`` checks params ==
sum(p.numel()) and MACs == FlopCounterMode / 2 on the meta device;
``same_function`` that the spec's model loads timm's state_dict strictly and
computes its outputs."""
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from tests.test_import_attention_families import OnTokens  # noqa: E402
from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class OnMap(nn.Module):
    """A 1x1 conv to `width`, the map made channels-last (VOLO's layout), the
    module, its output read flat as tokens."""

    def __init__(self, module, width=16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 1)
        self.attn = module

    def forward(self, x):
        return self.attn(self.stem(x).permute(0, 2, 3, 1)).flatten(1, 2)


# -- OutlookAttention ----------------------------------------------------------------


@pytest.mark.parametrize("size, heads, kernel, padding, stride, bias", [
    ((4, 4), 1, 3, 1, 2, False),    # VOLO's: a 2 x 2 pooled map
    ((5, 3), 2, 3, 1, 2, True),     # ceil_mode: 3 x 2 pooled positions
    ((3, 3), 2, 3, 1, 1, False),
    ((4, 4), 1, 2, 0, 2, True),     # windows that do not overlap
])
def test_outlook_attention_is_one_row_and_computes_the_same(size, heads, kernel, padding,
                                                             stride, bias):
    from timm.models.volo import OutlookAttention
    module = OutlookAttention(16, heads, kernel_size=kernel, padding=padding, stride=stride,
                              qkv_bias=bias)
    model = OnMap(module)
    done, report = imported(model, (3, *size))
    assert rows(report) == {"stem": "conv", "tokens": "tokens", "attn": "outlook_attention"}
    row = report.rows[-1]
    (h, w), d, k4h = size, 16, kernel ** 4 * heads
    n, pn = h * w, -(-h // stride) * -(-w // stride)
    # v and proj D^2 each (+ v's bias, proj's bias), attn D -> k^4*heads with its bias
    assert row.params == 2 * d * d + (d if bias else 0) + d + d * k4h + k4h
    # v and proj on every position; attn on the pn pooled ones; per head and
    # pooled position a k^2 x k^2 by k^2 x D/heads product: pn*k^4*D
    assert row.macs == 2 * n * d * d + pn * d * k4h + pn * kernel ** 4 * d
    same_function(model, (3, *size), done)


def test_an_outlook_attention_scaled_otherwise_has_no_kind():
    from timm.models.volo import OutlookAttention
    module = OutlookAttention(16, 2, stride=2)
    module.scale = 1.0
    with pytest.raises(importer.Unsupported, match="OutlookAttention"):
        importer.import_module(OnMap(module).eval(), (3, 4, 4), strict=True)


# -- Attention and ClassAttention ------------------------------------------------------


def test_volo_attention_on_a_channels_last_map_is_an_attention_row():
    from timm.models.volo import Attention
    model = OnMap(Attention(16, num_heads=4))
    done, report = imported(model, (3, 3, 2))
    assert rows(report) == {"stem": "conv", "tokens": "tokens", "attn": "attention"}
    # qkv without a bias, proj with one; MACs 4*N*D^2 + 2*N^2*D
    assert report.rows[-1].params == 4 * 16 * 16 + 16
    assert report.rows[-1].macs == 4 * 6 * 256 + 2 * 36 * 16
    same_function(model, (3, 3, 2), done)


@pytest.mark.parametrize("heads, bias", [(4, True), (2, False)])
def test_volo_class_attention_is_class_attention_with_one_kv(heads, bias):
    from timm.models.volo import ClassAttention
    model = OnTokens(ClassAttention(16, num_heads=heads, qkv_bias=bias))
    done, report = imported(model, (3, 2, 3))
    assert rows(report)["attn"] == "class_attention"
    assert "kv = true" in done.text
    row = report.rows[-1]
    # q (D^2), kv (2*D^2), proj (D^2 + D), the biases of q and kv (3*D); MACs: q
    # on one token D^2, kv on the 6 tokens 2*6*D^2, the one query's scores and
    # its weighted values 2*6*D, proj D^2
    assert row.params == 4 * 256 + 16 + (48 if bias else 0)
    assert row.macs == 256 + 2 * 6 * 256 + 2 * 6 * 16 + 256
    same_function(model, (3, 2, 3), done)


def test_a_class_attention_with_wider_heads_has_no_kind():
    from timm.models.volo import ClassAttention
    module = ClassAttention(16, num_heads=2, head_dim=16)   # q: 16 -> 32
    with pytest.raises(importer.Unsupported, match="ClassAttention"):
        importer.import_module(OnTokens(module).eval(), (3, 2, 3), strict=True)


# -- the max over the tokens -----------------------------------------------------------


class MaxOfTokens(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.stem, self.how = nn.Conv2d(3, 8, 1), how

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        if self.how == "values":
            return x.max(1)[0]
        if self.how == "amax":
            return x.amax(dim=-2)
        return x.max(1)[1].float()


@pytest.mark.parametrize("how", ["values", "amax"])
def test_a_max_over_the_tokens_is_token_pool_max(how):
    model = MaxOfTokens(how)
    done, report = imported(model, (3, 3, 2))
    assert rows(report) == {"stem": "conv", "tokens": "tokens", "token_pool": "token_pool"}
    assert 'token_pool = "max"' in done.text
    assert report.rows[-1].output_shape == (8,)
    assert report.rows[-1].flops == 5 * 8      # (N - 1)*D comparisons
    same_function(model, (3, 3, 2), done)


def test_the_indices_of_a_max_have_no_kind():
    with pytest.raises(importer.Unsupported):
        importer.import_module(MaxOfTokens("indices").eval(), (3, 3, 2), strict=True)


# -- a whole VOLO --------------------------------------------------------------------


def test_a_small_volo_imports_with_no_opaque_row_and_computes_the_same():
    from timm.models.volo import VOLO
    model = VOLO(layers=[1, 1, 1, 1], embed_dims=[16, 32, 32, 32], num_heads=[1, 2, 2, 2],
                 img_size=32, stem_hidden_dim=8, num_classes=5)
    done, report = imported(model, (3, 32, 32))
    assert not done.opaque
    kinds = list(rows(report).values())
    assert kinds.count("outlook_attention") == 1 and kinds.count("attention") == 3
    assert kinds.count("class_attention") == 2 and "position_embedding" in kinds
    assert 'token_pool = "max"' in done.text
    same_function(model, (3, 32, 32), done)
