"""Bad graph specs: one clear line with the block path, exit status 2."""
import pytest
from click.testing import CliRunner

from archcalc.cli import main

HEAD = '[model]\nname = "g"\ninput = [3, 32, 32]\n'


def run_spec(tmp_path, text):
    p = tmp_path / "g.toml"
    p.write_text(text)
    result = CliRunner().invoke(main, ["table", str(p)])
    return result.exit_code, result.stderr


@pytest.mark.parametrize("text, fragments", [
    # a branch that ends with another H x W
    (HEAD + 'layers = [\n  {name = "mix", concat = [\n'
     '    [ {conv = 8, kernel = 3, padding = 1} ],\n'
     '    [ {conv = 8, kernel = 3} ],\n  ]},\n]\n',
     [":5:", "layer mix.b2: 30x30 does not match 32x32 of b1 (the first branch); concat needs equal H and W"]),
    # adding 256 to 512 channels
    (HEAD + 'layers = [\n  {conv = 256, kernel = 1},\n'
     '  {name = "res", residual = [ {conv = 512, kernel = 1} ], shortcut = "identity"},\n]\n',
     ["layer res", "adding 512 x 32 x 32 (body) and 256 x 32 x 32 (shortcut)", "needs equal shapes"]),
    # an unknown block, with the close match
    (HEAD + 'layers = [ {block = "incepton", name = "i1"} ]\n[blocks.inception]\n'
     'concat = [[{conv = 8, kernel = 1}], [{conv = 8, kernel = 1}]]\n',
     ["layer i1", "unknown block 'incepton'; did you mean 'inception'?"]),
    # a block called with a missing argument
    (HEAD + 'layers = [ {block = "b", name = "b1", with = {C = 8}} ]\n[blocks.b]\n'
     'args = ["C", "D"]\nlayers = [{conv = "C + D", kernel = 1}]\n',
     ["layer b1", "block 'b' needs the argument 'D'"]),
    # an argument the block does not take
    (HEAD + 'layers = [ {block = "b", with = {C = 8, E = 1}} ]\n[blocks.b]\n'
     'args = ["C"]\nlayers = [{conv = "C", kernel = 1}]\n',
     ["block 'b' has no argument(s) E"]),
    # a block that includes itself
    (HEAD + 'layers = [ {block = "a", name = "top"} ]\n[blocks.a]\n'
     'layers = [{conv = 8, kernel = 1}, {block = "a"}]\n',
     ["layer top", "block 'a' includes itself (a > a)"]),
    # the error inside a block names its path
    (HEAD + 'layers = [ {block = "b", name = "blk"} ]\n[blocks.b]\n'
     'concat = [[{name = "c1", conv = 8, kernel = 1}], [{name = "c2", conv = 8, kernal = 1}]]\n',
     ["layer blk.b2.c2", "no argument 'kernal'"]),
    (HEAD + 'layers = [ {name = "r", residual = [{conv = 3, kernel = 1}], shortcut = "sideways"} ]\n',
     ["shortcut takes 'auto', 'identity', 'projection', 'pad' or a list of layers"]),
    (HEAD + 'layers = [ {name = "m", concat = [[{conv = 3, kernel = 1}]]} ]\n',
     ["concat takes a list of at least two branches"]),
    (HEAD + 'layers = [ {conv = 8, kernel = 3, padding = 1}, {max_unpool = 2, of = "pool9"} ]\n',
     ["no earlier layer is named 'pool9'"]),
])
def test_bad_graph_specs(tmp_path, text, fragments):
    code, err = run_spec(tmp_path, text)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
