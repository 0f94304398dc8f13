"""Bad input: one clear line naming the file, the layer and what is wrong;
exit status 2; never a traceback. The message text is checked, not only the code."""
import pytest
from click.testing import CliRunner

from archcalc.cli import main
from conftest import spec_path

HEADER = '[model]\nname = "t"\ninput = [3, 32, 32]\nlayers = [\n'


def run(args):
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stdout, result.stderr


def write(tmp_path, text, name="net.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def check_one_line(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("layers, fragments", [
    ('{conv = 8, kernel = 3},\n{convv = 8, kernel = 3},', [":6:", "layer #2", "unknown layer kind 'convv'", "did you mean 'conv'"]),
    ('{name = "c1", conv = 8},', [":5:", "layer c1", "conv needs the argument 'kernel'"]),
    ('{conv = 8, kernal = 3},', ["no argument 'kernal'", "did you mean 'kernel'"]),
    ('{conv = 8, kernel = true},', ["kernel takes an integer", "Received: kernel=True"]),
    ('{conv = -8, kernel = 3},', ["out must be positive", "Received: out=-8"]),
    ('{conv = 8, kernel = 3, stride = 0},', ["stride must be positive"]),
    ('{name = "big", conv = 8, kernel = 40},', ["layer big", "kernel 40 along height is larger than the padded input 32"]),
    ('{conv = 8, kernel = 3, groups = 2},', ["groups=2 must divide the input channels", "Received: input channels=3"]),
    ('{conv = 8, kernel = 3, padding = "full"},', ["padding", "unknown variable 'full'", 'full = "?"']),
    ('{conv = "2*Cx", kernel = 3},', ["unknown variable 'Cx'"]),
    ('{conv = 8, kernel = 3, stride = 2, padding = "same"},', ["padding='same' needs stride 1"]),
    ('{maxpool = 2, padding = 2},', ["padding must be at most half the kernel"]),
    ('{fc = 10},\n{conv = 8, kernel = 3},', ["layer #2", "needs a C x H x W input", "cannot follow a flatten or fc"]),
    ('{conv = 8, fc = 3, kernel = 3},', ["names two layer kinds"]),
    ('{relu = 3},', ["relu takes no value of its own"]),
    ('{conv = "2*", kernel = 3},', ["cannot read the expression '2*'"]),
    ('{conv = "__import__(\'os\')", kernel = 3},', ["is not allowed in a spec expression"]),
    ('{conv = "C.real", kernel = 3},', ["is not allowed in a spec expression"]),
    ('{conv = "7/2", kernel = 3},', ["7/2 is not an integer"]),
    ('{dropout = 1.5},', ["p must lie in [0.0, 1.0]"]),
    ('{conv = 8, kernel = 3, activation = "snake"},', ["activation takes one of"]),
    ('{maxpool = 2, activation = "relu"},', ["maxpool takes no activation"]),
    ('{pad = true, height = -1, mode = "reflect"},', ["only the constant mode",
                                                      "Received: mode='reflect'"]),
    ('{pad = true, width = [-20, -12]},', ["leave nothing of a 3 x 32 x 32 input"]),
])
def test_bad_layers(tmp_path, layers, fragments):
    path = write(tmp_path, HEADER + layers + "\n]\n")
    code, out, err = run(["table", path])
    check_one_line(code, err, path, *fragments)


@pytest.mark.parametrize("text, fragments", [
    ("", ["is empty"]),
    ("[model\nname = 1\n", [":1:", "invalid TOML"]),
    ('[model]\nname = "t"\nlayers = [{conv = 8, kernel = 3}]\n', ["needs input"]),
    ('[model]\nname = "t"\ninput = [3, 0, 32]\nlayers = [{conv = 8, kernel = 3}]\n', ["input must be positive"]),
    ('[model]\nname = "t"\ninput = [3, 32]\nlayers = [{conv = 8, kernel = 3}]\n', ["input must be [channels, height, width]"]),
    ('[model]\nname = "t"\ninput = [3, 32, 32]\n', ["has no layers"]),
    ('[model]\nname = "t"\ninput = [3, 32, 32]\n[defaults.conv]\nkernel = 3\nlayers = [{conv = 8}]\n', ["keys after a [table] header belong to that table"]),
    ('[model]\nname = "t"\ninput = [3, 32, 32]\nlayers = [{conv = 8, kernel = 3}]\n[defaults.convx]\nkernel = 3\n', ["unknown layer kind 'convx'"]),
    ('[model]\nname = "t"\ninput = [3, 32, 32]\ninclude = ["net.toml"]\nlayers = [{conv = 8, kernel = 3}]\n', ["includes itself"]),
    ('[model]\nname = "t"\ninput = [3, 32, 32]\ninclude = ["missing.toml"]\nlayers = [{conv = 8, kernel = 3}]\n', ["missing.toml: no such file"]),
])
def test_bad_files(tmp_path, text, fragments):
    path = write(tmp_path, text)
    code, out, err = run(["table", path])
    check_one_line(code, err, *fragments)


def test_unbound_variable_where_a_number_is_needed(tmp_path):
    path = write(tmp_path, '[vars]\nN = "?"\n' + HEADER + '{conv = 8, kernel = 3, repeat = "N"},\n]\n')
    code, out, err = run(["table", path])
    check_one_line(code, err, ":7:", "repeat needs a number", "N", "--set")


def test_missing_file_and_directory(tmp_path):
    code, _, err = run(["table", str(tmp_path / "nope.toml")])
    check_one_line(code, err, "nope.toml: no such file")
    code, _, err = run(["table", str(tmp_path)])
    check_one_line(code, err, "is a directory")


@pytest.mark.parametrize("args, fragments", [
    (["--batch", "0"], ["--batch", "0 is not in the range"]),
    (["--batch", "many"], ["--batch", "'many' is not a valid integer"]),
    (["--dtype", "fp8"], ["--dtype", "'fp8' is not one of"]),
    (["--format", "xml"], ["--format", "'xml' is not one of"]),
    (["--input", "3x22"], ["--input takes CxHxW", "'3x22'"]),
    (["--input", "3x0x0"], ["--input takes CxHxW"]),
    (["--set", "X=3"], ["--set X=3: the spec has no variable 'X'"]),
    (["--set", "X"], ["--set takes NAME=VALUE"]),
    (["--input", "3x32x32", "--strict"], []),
])
def test_bad_options(args, fragments):
    code, out, err = run(["table", spec_path("vgg16.toml"), *args])
    if not fragments:
        assert code == 0, err  # VGG-16 at 32x32 tiles: --strict passes
        return
    check_one_line(code, err, *fragments)


def test_strict_turns_a_non_tiling_layer_into_an_error(tmp_path):
    path = write(tmp_path, '[model]\nname = "t"\ninput = [3, 7, 7]\nlayers = [\n'
                 '{name = "c", conv = 8, kernel = 3, stride = 3},\n]\n')
    code, out, err = run(["table", path])
    assert code == 0
    assert "warning:" in err and "(7 - 3 + 2*0)/3 + 1 = 2.33" in err
    code, out, err = run(["table", path, "--strict"])
    check_one_line(code, err, f"{path}:5:", "layer c", "2.33", "--strict")


def test_unbound_variable_in_a_size_gives_formulas_and_a_note(tmp_path):
    path = write(tmp_path, '[vars]\nC = "?"\n' + HEADER + '{conv = "C", kernel = 3, padding = 1},\n]\n')
    code, out, err = run(["table", path, "--format", "json"])
    assert code == 0
    assert "unbound variable(s) C" in err
    import json
    data = json.loads(out)
    assert data["totals"]["params"] == "28*C"
    assert data["layers"][1]["output_shape"] == ["C", 32, 32]


def test_help_has_examples():
    code, out, err = run(["table", "--help"])
    assert code == 0 and "Examples:" in out and "archcalc table specs/vgg16.toml" in out
