"""CLI output: a golden rich table for VGG-16, the JSON contract of DESIGN.md,
CSV and markdown, and the promise that a table never imports torch."""
import json
import os
import subprocess
import sys

from click.testing import CliRunner

from archcalc.cli import main
from conftest import ROOT, spec_path

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def invoke(*args):
    # piped output with no COLUMNS: every column at full width, whatever the terminal
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": None})
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_vgg16_rich_table_is_stable():
    """Regenerate with ARCHCALC_UPDATE_GOLDEN=1 after an intended change."""
    out = invoke("table", spec_path("vgg16.toml")).replace(ROOT + os.sep, "")
    path = os.path.join(GOLDEN, "vgg16_table.txt")
    if os.environ.get("ARCHCALC_UPDATE_GOLDEN"):
        with open(path, "w") as fh:
            fh.write(out)
    with open(path) as fh:
        assert out == fh.read()
    assert "(3*3*64)*128 + 128 = 73,856" in out
    assert "TOTAL memory: 15.2M activations x 4 bytes (fp32) = 61.0 MB / image" in out
    assert "TOTAL params: 138M (138,357,544)" in out
    assert "24M is a slip" in out


def test_json_follows_the_contract():
    data = json.loads(invoke("table", spec_path("vgg16.toml"), "--batch", "8",
                             "--dtype", "bf16", "--format", "json"))
    assert set(data) >= {"model", "input", "batch", "dtype", "layers", "totals"}
    assert data["model"] == "VGG-16" and data["input"] == [3, 224, 224]
    assert data["batch"] == 8 and data["dtype"] == "bf16"
    first = data["layers"][0]
    assert first["index"] == 0 and first["type"] == "input" and first["output_shape"] == [3, 224, 224]
    for row in data["layers"]:
        assert set(row) >= {"index", "name", "type", "output_shape", "params", "macs",
                            "flops", "activations", "receptive_field"}
        assert all(isinstance(row[k], int) for k in ("params", "macs", "flops", "activations",
                                                      "receptive_field"))
    t = data["totals"]
    assert set(t) >= {"params", "trainable_params", "macs", "flops", "activations",
                      "activation_bytes", "param_bytes", "saved_activation_bytes",
                      "train_memory_bytes"}
    assert all(isinstance(v, int) for v in t.values())
    assert t["activation_bytes"] == 15_237_608 * 2 * 8
    assert data["layers"][-1]["output_shape"] == [1000]


def test_csv_and_markdown():
    csv = invoke("table", spec_path("lenet5.toml"), "--format", "csv").splitlines()
    assert csv[0] == "index,name,type,output_shape,params,macs,flops,activations,receptive_field"
    assert csv[3].startswith("2,S2,maxpool,6x14x14,0,")
    assert len(csv) == 10
    # the totals, not a column sum: activations count every tensor the forward
    # allocates, the conv and fc outputs under a fused tanh too (nn.Tanh is not in
    # place): 9,118 in the rows + 4,704 + 1,600 + 120 + 84 = 15,626
    assert csv[-1] == "total,TOTAL,,,61706,416520,844276,15626,32"
    md = invoke("table", spec_path("lenet5.toml"), "--format", "markdown")
    assert "| 3 | C3 | conv+tanh | 16 x 10 x 10 |" in md
    assert r"(5\*5\*6)\*16 + 16 = 2,416" in md
    assert "TOTAL params: 61.7K (61,706)" in md


def test_table_never_imports_heavy_modules():
    code = (
        "import sys, runpy\n"
        "sys.argv = ['archcalc', 'table', sys.argv[1]]\n"
        "try:\n    runpy.run_module('archcalc', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'pandas', 'sympy', 'fvcore', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n")
    for spec in ("vgg16.toml", "alexnet.toml", "lenet5_lecun98.toml"):
        out = subprocess.run([sys.executable, "-c", code, spec_path(spec)], capture_output=True,
                             text=True, cwd=ROOT, check=True).stdout
        assert out.strip().splitlines()[-1] == "HEAVY=", out[-500:]


def test_kinds_lists_every_kind():
    out = invoke("kinds")
    for name in ("conv", "conv_table", "maxpool", "avgpool", "global_avgpool", "fc", "flatten",
                 "batch_norm", "lrn", "dropout", "relu", "leaky_relu", "prelu", "elu", "tanh",
                 "sigmoid", "softplus", "gelu", "softmax", "subsample"):
        assert name in out


def test_large_tables_render_as_plain_columns():
    out = invoke("table", spec_path("preact_resnet1001_cifar.toml"))
    lines = out.splitlines()
    assert "3339 rows; --depth N folds blocks" in lines[0]
    assert lines[1].split()[:3] == ["#", "layer", "kind"]
    assert any("stage3.preact_bottleneck110.add" in ln for ln in lines)
    assert "TOTAL params: 10.3M (10,327,706)" in out
