"""Tables other stages read are derived from the kinds, and hold for every
registered kind (a new kind is covered without a test written for it):

- archcalc predict's op relatives (``Kind.op_relatives``): every op table a
  kind's cost names is one `archcalc calibrate` measures or has a relative,
  and reaches one a ``--quick`` calibration measures, so a quick profile
  rates every kind;
- the memory check's unfolded columns (``Kind.im2col_columns``): the sizes
  torch.nn.functional.unfold and fold give for the same convolution.
"""
import pytest

torch = pytest.importorskip("torch")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from archcalc.layers import kinds  # noqa: E402
from archcalc.layers.base import NoCostModel  # noqa: E402
from archcalc.profiles.rates import op_relatives  # noqa: E402
from archcalc.torch.calibrate import _ops  # noqa: E402
from archcalc.torch.grid import QUICK_OPS  # noqa: E402
from test_registry_kinds import _case, _engine  # noqa: E402  (the kinds' argument draws)

# primitives rated by shape (the conv and GEMM tables) or not at all (a view)
NOT_OP_TABLES = {"conv", "linear", "view"}
COSTED = [name for name, kind in kinds().items() if not kind.not_built]


def _reaches_quick(op):
    seen = []
    while op is not None and op not in QUICK_OPS:
        assert op not in seen, f"op relatives loop: {seen + [op]}"
        seen.append(op)
        op = op_relatives().get(op)
    return op


@pytest.mark.parametrize("name", COSTED)
def test_every_op_a_kind_costs_is_calibrated_and_rated_by_a_quick_profile(name):
    kind = kinds()[name]
    measured = set(_ops())

    @settings(max_examples=8, deadline=None, database=None,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(_case(kind))
    def check(case):
        given_args, x = case
        engine = _engine(kind, given_args, x)
        assume(engine is not None)
        a, y, _, _ = engine
        try:
            costs = kind.cost(a, x, y)
        except NoCostModel:
            return
        for op in {c.primitive for c in costs} - NOT_OP_TABLES:
            assert op in measured or op in op_relatives(), \
                f"{name} names op {op!r}, which calibrate does not measure: give its relative"
            assert _reaches_quick(op) is not None, f"{name}: {op!r} reaches no quick op"

    check()


def test_op_relatives_come_from_the_kinds_that_name_them():
    assert op_relatives()["lrn"] == kinds()["lrn"].op_relatives["lrn"] == "batch_norm"
    assert op_relatives()["gelu"] == "sigmoid"


@settings(max_examples=30, deadline=None, database=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 2), st.integers(0, 1), st.integers(3, 9), st.integers(3, 9))
def test_unfolded_columns_are_torch_s_unfold_and_fold(cin, cout, kh, kw, s, p, h, w):
    conv, transposed = kinds()["conv"], kinds()["conv_transpose"]
    args = {"out": cout, "kernel": [kh, kw], "stride": s, "padding": p}
    x = (cin, h, w)
    assume(h + 2 * p >= kh and w + 2 * p >= kw)
    a = conv.read_args(args, {})
    y = conv.output_shape(a, x)
    # im2col: F.unfold gathers every output position's window
    cols = F.unfold(torch.empty(1, *x, device="meta"), (kh, kw), stride=s, padding=p)
    assert conv.im2col_columns(a, x, y) == cols.numel()
    # col2im: a transposed conv's GEMM makes C_out*kh*kw columns per input
    # position, which F.fold sums into its output
    a = transposed.read_args(args, {})
    y = transposed.output_shape(a, x)
    assume(all(d > 0 for d in y))
    columns = torch.empty(1, cout * kh * kw, h * w)
    folded = F.fold(columns, y[1:], (kh, kw), stride=s, padding=p)
    assert tuple(folded.shape[1:]) == tuple(y)
    assert transposed.im2col_columns(a, x, y) == columns.numel()
