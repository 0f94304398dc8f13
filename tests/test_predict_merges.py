"""archcalc predict on merge entries of N inputs: PyTorch runs a sum or a
product of N as N - 1 binary ops (counted on the aten ops the built module
calls), a concatenation as one torch.cat; predict charges the same ops, each
at the synthetic profile's known rate."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from archcalc.predict import Profile, predict
from archcalc.spec.loader import loads
from archcalc.torch.build import JoinInputs
from test_predict import NS_PER_ELEMENT, OVERHEAD, synthetic

# 10 x 100 x 100 = 100,000 elements per sample; at batch 10 each op runs on
# 1,000,000 elements, a calibrated point of the synthetic profile's op tables
SHAPE, BATCH = (10, 100, 100), 10
ELEMENTS = 1_000_000
OP_S = ELEMENTS * NS_PER_ELEMENT * 1e-9 + OVERHEAD   # one add, mul or cat


def spec(n: int, op: str):
    sources = ", ".join(f'"b{i}"' for i in range(n))
    branches = "\n".join(f'  {{name = "b{i}", from = "input", relu = true}},' for i in range(n))
    return loads(f'''
[model]
name = "merge{n}"
input = {list(SHAPE)}
layers = [
{branches}
  {{name = "m", merge = "{op}", from = [{sources}]}},
]
''', file=f"merge{n}.toml")


class CountOps(TorchDispatchMode):
    """The aten ops a module's forward calls, by name."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__.rstrip("_"))
        return func(*args, **(kwargs or {}))


def torch_ops(op: str, n: int) -> list:
    xs = [torch.ones(1, *SHAPE) for _ in range(n)]
    with CountOps() as count:
        JoinInputs(op)(*xs)
    return count.ops


def merge_forward_ms(n: int, op: str) -> float:
    p, = predict(spec(n, op), Profile(synthetic()), batches=[BATCH])
    [layer] = [layer for layer in p.layers if layer.name == "m"]
    return layer.forward_ms


@pytest.mark.parametrize("op, aten", [("add", "add"), ("multiply", "mul")])
@pytest.mark.parametrize("n", [3, 4])
def test_a_merge_of_n_costs_n_minus_1_binary_ops(op, aten, n):
    assert torch_ops("add" if op == "add" else "mul", n) == [aten] * (n - 1)
    # the same container call for any N: N - 2 more ops than a merge of two
    extra = merge_forward_ms(n, op) - merge_forward_ms(2, op)
    assert extra == pytest.approx((n - 2) * OP_S * 1e3, rel=1e-6)


def test_a_concat_of_n_is_one_cat():
    from archcalc.predict import Predictor
    assert torch_ops("concat", 4) == ["cat"]
    report = spec(4, "concat").analyze(batch=BATCH)
    costs = Predictor(Profile(synthetic()), "inference").row_costs(report.rows[-1])
    assert [c.primitive for _kind, c, _x in costs] == ["cat"]
