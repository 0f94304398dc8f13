"""What a training step keeps under torch.autocast: LRN computes in fp32
(pow is on autocast's fp32 list on CUDA, avg_pool3d on the CPU; the division
by that fp32 denominator promotes), so its output is fp32, the max pool after
it keeps a fp32 input, and every conv that reads it keeps its own bf16 cast.
That was GoogLeNet's training memory 18-20% under measured with bf16."""
import pytest

import archcalc
from archcalc.analysis import analyze
from conftest import spec_path

INCEPTION_AFTER_LRN = """
[model]
name = "lrn under autocast"
input = [3, 32, 32]
layers = [
  {conv = 16, kernel = 3, padding = 1, activation = "relu"},
  {lrn = 5},
  {maxpool = 3, stride = 2, padding = 1},
  {concat = [[{conv = 8, kernel = 1}], [{conv = 8, kernel = 3, padding = 1}],
             [{maxpool = 3, stride = 1, padding = 1}, {conv = 8, kernel = 1}]]},
  {relu = true},
]
"""


@pytest.mark.parametrize("batch", [1, 3])
def test_saved_bytes_under_cpu_autocast_equal_measured(tmp_path, batch):
    torch = pytest.importorskip("torch")
    from archcalc.torch.build import build_model
    from archcalc.torch.measure import saved_tensor_bytes
    path = tmp_path / "net.toml"
    path.write_text(INCEPTION_AFTER_LRN)
    spec = archcalc.load(str(path))
    model = build_model(spec).train()
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        measured = saved_tensor_bytes(model, x)
    # autocast's cached bf16 copies of the conv weights are kept too (bench
    # counts them beside the activations)
    weight_casts = sum(p.numel() * 2 for p in model.parameters() if p.dim() > 1)
    auto = analyze(spec, batch=batch, dtype="bf16", autocast="cpu")
    plain = analyze(spec, batch=batch, dtype="bf16")
    assert measured == auto.totals["saved_activation_bytes"] + weight_casts
    # a plain bf16 count misses 37% of it
    assert plain.totals["saved_activation_bytes"] + weight_casts < 0.65 * measured


def test_googlenet_bf16_autocast_keeps_lrns_fp32_tail():
    """Per sample on CUDA: the two LRNs' power input and result in fp32
    (+2 bytes x (200,704 + 602,112) x 2), the max pool after the second keeps a
    fp32 input (+1,204,224), Inception 3a's three convs each keep a cast of
    its 192 x 28 x 28 input and its pool branch a fp32 input (+1,204,224):
    5,619,712 bytes, 18.8% over the plain bf16 count, the 18-20% bench
    measured on an H100."""
    spec = archcalc.load(spec_path("googlenet.toml"))
    plain = analyze(spec, batch=1, dtype="bf16").totals["saved_activation_bytes"]
    cuda = analyze(spec, batch=1, dtype="bf16", autocast="cuda").totals["saved_activation_bytes"]
    cpu = analyze(spec, batch=1, dtype="bf16", autocast="cpu").totals["saved_activation_bytes"]
    assert plain == 29_875_040
    assert cuda - plain == 2 * 2 * (200_704 + 602_112) + 1_204_224 + 1_204_224 == 5_619_712
    # on the CPU avg_pool3d runs in fp32 too: the padded squares, (C + 4) x H x W
    assert cpu - cuda == 2 * (68 * 56 * 56 + 196 * 56 * 56)
    # fp32 runs have no autocast; nets without LRN are unchanged
    assert analyze(spec, batch=1, autocast="cuda").totals == analyze(spec, batch=1).totals
    for name in ("vgg16", "resnet50", "vit_b_16"):
        net = archcalc.load(spec_path(name + ".toml"))
        assert analyze(net, batch=2, dtype="bf16", autocast="cuda").totals == \
            analyze(net, batch=2, dtype="bf16").totals


def test_bench_memory_prediction_uses_autocast():
    pytest.importorskip("torch")
    from archcalc.graph import build_graph
    from archcalc.torch.bench import predicted_memory
    graph = build_graph(archcalc.load(spec_path("googlenet.toml")))
    gpu = predicted_memory(graph, 64, "train", "bf16", "cuda")
    fp32_weights = predicted_memory(graph, 64, "train", None, "cuda") - \
        analyze(graph, batch=64, optimizer="momentum").totals["saved_activation_bytes"]
    params = analyze(graph).totals["params"]
    assert gpu == fp32_weights + params * 2 + 64 * 35_494_752


@pytest.mark.parametrize("spec", ["vgg16", "resnet50"])
def test_cuda_inference_peak_counts_cudnn_workspace(spec):
    """The inference peak on a GPU counts cuDNN's layout copies of a k x k
    conv's input and output and cuBLAS's workspace: against the allocator's
    peak measured on an H100 (bf16 autocast; benchmarks/results/h100, the
    `archcalc bench` JSON of that run), within 11% at batches 1, 64 and 256,
    and never under by more than 1% (a prediction used to choose a batch)."""
    import json
    import os
    pytest.importorskip("torch")
    from archcalc.torch.bench import predicted_memory
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "benchmarks", "results", "h100", f"{spec}_inference_bf16.json")
    with open(path) as fh:
        results = json.load(fh)["results"]
    graph = archcalc.load(spec_path(spec + ".toml"))
    assert {r["batch"] for r in results} == {1, 64, 256}
    for r in results:
        measured = r["measured_memory_bytes"]
        predicted = predicted_memory(graph, r["batch"], "inference", "bf16", "cuda")
        assert -0.01 <= predicted / measured - 1 <= 0.11, (spec, r["batch"], predicted, measured)
        # without the workspace (the CPU's count) it was 9-44% under
        cpu = predicted_memory(graph, r["batch"], "inference", "bf16", "cpu")
        assert cpu < predicted
