"""CondConv's inverted residual (timm's CondConvResidual, the efficientnet_cc
models) imports as one cond_conv_block row: params == sum(numel), MACs ==
FlopCounterMode / 2 on meta (``imported`` checks both), and the spec's model
loads timm's state_dict strictly and computes its outputs."""
from functools import partial

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from torch import nn  # noqa: E402

from tests.test_import_functional import imported, rows, same_function  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def block(cin, cout, stride, pad, se, experts=3, kernel=3):
    from timm.models._efficientnet_blocks import CondConvResidual, SqueezeExcite
    se_layer = partial(SqueezeExcite, rd_ratio=0.25) if se else None
    return CondConvResidual(cin, cout, dw_kernel_size=kernel, stride=stride, pad_type=pad,
                            exp_ratio=2, act_layer=nn.SiLU, se_layer=se_layer,
                            num_experts=experts)


@pytest.mark.parametrize("cin, cout, stride, pad, se, kernel", [
    (8, 8, 1, "", True, 3),       # the skip
    (8, 12, 2, "", False, 5),     # k // 2 style padding at stride 2
    (8, 12, 2, "same", True, 3),  # TensorFlow's same at stride 2: a pad, one more after
])
def test_cond_conv_block_is_one_row_and_computes_the_same(cin, cout, stride, pad, se, kernel):
    model = nn.Sequential(nn.Conv2d(3, cin, 1), block(cin, cout, stride, pad, se,
                                                       kernel=kernel))
    done, report = imported(model, (3, 7, 6))
    assert rows(report)["1"] == "cond_conv_block"
    e, mid, k = 3, 2 * cin, kernel
    ho, wo = ((7 + 1) // 2, 6 // 2) if stride == 2 else (7, 6)
    rd = mid // 4 if se else 0
    weights = mid * cin + mid * k * k + cout * mid        # one expert's, per conv
    se_params = (mid * rd + rd + rd * mid + mid) if se else 0
    row = report.rows[-1]
    # routing C*E + E, E experts per conv, three batch norms, the SE
    assert row.params == cin * e + e + e * weights + 2 * (mid + mid + cout) + se_params
    # routing, the mixing of each conv's kernels (E x weights), the convs, the SE
    assert row.macs == (cin * e + e * weights + 7 * 6 * mid * cin + ho * wo * mid * k * k
                        + ho * wo * cout * mid + (2 * mid * rd if se else 0))
    assert row.output_shape == (cout, ho, wo)
    same_function(model, (3, 7, 6), done)


def test_a_small_efficientnet_cc_imports_with_no_opaque_row_and_computes_the_same():
    model = timm.create_model("tf_efficientnet_cc_b0_4e", pretrained=False,
                              num_classes=5).eval()
    done, report = imported(model, (3, 32, 32))
    assert "opaque" not in rows(report).values()
    blocks = sum(type(m).__name__ == "CondConvResidual" for m in model.modules())
    assert list(rows(report).values()).count("cond_conv_block") == blocks == 8
    same_function(model, (3, 32, 32), done)
