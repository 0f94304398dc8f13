"""`archcalc lint` on general graphs (from, merge entries) and transformers:
each rule compares a row with what it really reads, and fc-heavy is about a
classifier, not per-token MLPs. Shapes and params from PyTorch."""
import torch

import archcalc
from archcalc.lint import lint
from archcalc.spec.loader import loads
from conftest import spec_path


def _spec(layers: str, input="[3, 64, 64]"):
    return loads(f'''
[model]
name = "t"
input = {input}
layers = [
{layers}
]
''', file="<t>")


def _found(report, rule):
    return [f for f in lint(report) if f.rule == rule]


def _input_shapes(model, names, shape):
    """The input shape (per sample) of each named module in a forward pass."""
    seen = {}
    for name in names:
        model.get_submodule(name).register_forward_hook(
            lambda m, args, out, name=name: seen.update({name: tuple(args[0].shape[1:])}))
    model(torch.zeros(1, *shape))
    return seen


def test_hrnet_fuse_layer_is_compared_with_its_own_input():
    """timm's HRNet-W18-small: fuse_layers.0.2.0, the 1x1 conv that brings
    branch 2 (64 x 14 x 14) to 16 channels, reads that branch, not the
    16 x 56 x 56 row above it in the table: no 16x drop, no finding."""
    import timm
    with torch.device("meta"):
        model = timm.create_model("hrnet_w18_small", pretrained=False).eval()
    seen = {}
    conv = model.get_submodule("stage3.0.fuse_layers.0.2.0")
    conv.register_forward_hook(lambda m, args, out: seen.update(x=tuple(args[0].shape[1:])))
    model(torch.zeros(1, 3, 224, 224, device="meta"))
    report = archcalc.load(spec_path("hrnet_w18_small.toml")).analyze()
    row = next(r for r in report.rows if r.name == "stage3.0.fuse_layers.0.2.0")
    assert seen["x"] == row.input_shape == (64, 14, 14)
    assert _found(report, "representational-bottleneck") == []


def test_a_bottleneck_through_from_is_measured_on_the_row_it_reads():
    """`c` pools `a` (8 x 64 x 64) to 8 x 16 x 16: a 16x drop of its real
    input; the row above it in the table (`b`, 4 x 64 x 64) would say 8x."""
    spec = _spec('''
  {name = "a", conv = 8, kernel = 3, padding = 1},
  {name = "b", from = "input", conv = 4, kernel = 1},
  {name = "c", from = "a", maxpool = 4},
  {name = "up", upsample = 4},
  {name = "cat", merge = "concat", from = ["b", "up"]},
''')
    seen = _input_shapes(spec.build(), ["c", "b"], (3, 64, 64))
    assert seen == {"c": (8, 64, 64), "b": (3, 64, 64)}
    [found] = _found(spec.analyze(), "representational-bottleneck")
    assert found.layer == "c"
    assert "8 x 64 x 64 = 32,768 -> 8 x 16 x 16 = 2,048 (32,768/2,048 = 16.00 > 4)" \
        in found.arithmetic
    assert found.numbers == {"before": 8 * 64 * 64, "after": 8 * 16 * 16, "later": 12 * 64 * 64}


def test_a_branch_of_a_fork_is_no_bottleneck():
    """HRNet's transition: a strided conv makes the half-resolution branch
    while the full one goes on; the representation is not squeezed."""
    spec = _spec('''
  {name = "a", conv = 8, kernel = 3, padding = 1},
  {name = "full", conv = 8, kernel = 3, padding = 1},
  {name = "low", from = "a", conv = 2, kernel = 3, stride = 2, padding = 1},
  {name = "up", upsample = 2},
  {name = "sum", merge = "concat", from = ["full", "up"]},
''')
    assert _found(spec.analyze(), "representational-bottleneck") == []


def test_bias_before_bn_only_where_the_norm_reads_the_biased_row():
    """`bn` normalizes the model's input (from = "input"), not `a`'s output:
    a's 8 biases are not cancelled. Without the from, they are."""
    text = '''
  {name = "a", conv = 8, kernel = 3, padding = 1},
  {name = "bn", %s batch_norm = true},
  {name = "cat", merge = "concat", from = ["a", "bn"]},
'''
    spec = _spec(text % 'from = "input",')
    assert _input_shapes(spec.build(), ["bn"], (3, 64, 64)) == {"bn": (3, 64, 64)}
    assert _found(spec.analyze(), "bias-before-bn") == []
    chained = _spec('''
  {name = "a", conv = 8, kernel = 3, padding = 1},
  {name = "bn", batch_norm = true},
''')
    [found] = _found(chained.analyze(), "bias-before-bn")
    assert found.layer == "a"
    assert found.numbers["redundant_params"] == chained.build().a.bias.numel() == 8


def test_expand_before_reduce_only_where_the_reduction_reads_the_expansion():
    """`pool` halves the input (from = "input"), not the 1x1's 64 channels."""
    layers = '''
  {name = "expand", conv = 64, kernel = 1, bias = false},
  {name = "pool", %s maxpool = 2},
  {name = "up", upsample = 2},
  {name = "cat", merge = "concat", from = ["expand", "up"]},
'''
    spec = _spec(layers % 'from = "input",', input="[16, 32, 32]")
    assert _input_shapes(spec.build(), ["pool"], (16, 32, 32)) == {"pool": (16, 32, 32)}
    assert _found(spec.analyze(), "expand-before-reduce") == []
    chained = _spec('''
  {name = "expand", conv = 64, kernel = 1, bias = false},
  {name = "pool", maxpool = 2},
''', input="[16, 32, 32]")
    [found] = _found(chained.analyze(), "expand-before-reduce")
    assert found.numbers["macs"] == 16 * 64 * 32 * 32


def test_per_token_mlps_are_not_fc_heavy():
    """torchvision's ViT-B/16: the per-token MLPs (197 x 768 tokens) hold most
    of the 86,567,656 params, the classifier 769,000: no VGG smell."""
    from torchvision.models import vit_b_16
    with torch.device("meta"):
        model = vit_b_16()
    total = sum(p.numel() for p in model.parameters())
    mlp = sum(p.numel() for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and ".mlp." in name for p in m.parameters())
    head = sum(p.numel() for p in model.heads.parameters())
    assert (total, head) == (86_567_656, 769_000) and mlp > total / 2
    report = archcalc.load(spec_path("vit_b_16.toml")).analyze()
    assert report.totals["params"] == total
    assert _found(report, "fc-heavy") == []


def test_per_token_mlps_of_an_imported_swin_are_not_fc_heavy():
    """torchvision's Swin-T, imported on the meta device: 28,288,354 params,
    the classifier 769,000 of them."""
    from torchvision.models import swin_t
    from archcalc.torch import importer
    with importer.empty_weights():
        model = swin_t().eval()
    done = importer.import_module(model, (3, 224, 224), label="swin_t", strict=True)
    report = loads(done.text, file="swin_t").analyze()
    assert report.totals["params"] == sum(p.numel() for p in model.parameters()) == 28_288_354
    assert _found(report, "fc-heavy") == []


def test_a_classifier_over_a_vector_is_still_fc_heavy():
    """VGG-16's fc6-fc8 on one 25,088 vector: 123,642,856 of 138,357,544."""
    from torchvision.models import vgg16
    with torch.device("meta"):
        model = vgg16()
    fc = sum(p.numel() for p in model.classifier.parameters())
    [found] = _found(archcalc.load(spec_path("vgg16.toml")).analyze(), "fc-heavy")
    assert found.numbers["fc_params"] == fc == 123_642_856
    # Faster R-CNN's fc6 and fc7 read each of its R regions' 7 x 7 x 512 map
    # whole: R is left open, and the finding stays
    [rcnn] = _found(archcalc.load(spec_path("faster_rcnn_vgg16.toml")).analyze(), "fc-heavy")
    assert rcnn.layer.startswith("detector.fc6, detector.fc7")
