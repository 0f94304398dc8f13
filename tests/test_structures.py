"""The structures' one contract (archcalc/structures.py): every node class names
its visitor method, every walk of the graph is a Visitor that handles every
node class, and the report's tree is made by the engine's walk itself, so its
rows are the table's rows, in order, for every shipped spec."""
import glob
import os
from dataclasses import dataclass, replace

import pytest

from archcalc.analysis import _Walker, analyze, fold
from archcalc.graph import _LevelNames, build_graph
from archcalc.spec.loader import load, loads
from archcalc.structures import NODE_CLASSES, Layer, Node, Sequence, Visitor
from conftest import SPECS

ALL_SPECS = sorted(glob.glob(os.path.join(SPECS, "*.toml")))
HEAD = '[model]\nname = "g"\ninput = [3, 8, 8]\n'


def visit_names(cls):
    return {name for name in dir(cls) if name.startswith("visit_")}


def test_every_node_class_names_its_own_visitor_method():
    names = [cls.visit_name for cls in NODE_CLASSES]
    assert len(set(names)) == len(names) == 8
    assert all(name.startswith("visit_") for name in names)
    # one class is the leaf (a table row): the Layer
    assert [cls for cls in NODE_CLASSES if cls.leaf] == [Layer]


def test_a_node_class_without_a_visit_name_fails_at_its_definition():
    with pytest.raises(TypeError, match="must name its visitor method"):
        @dataclass
        class Ring(Node):   # noqa: F841 - the definition itself must fail
            items: list


@pytest.mark.parametrize("visitor", [_Walker, _LevelNames])
def test_the_pure_python_walks_handle_every_node_class(visitor):
    assert {cls.visit_name for cls in NODE_CLASSES} <= visit_names(visitor)


def test_the_torch_builder_handles_every_node_class():
    pytest.importorskip("torch")
    from archcalc.torch.build import _Builder, _StructureModule
    assert {cls.visit_name for cls in NODE_CLASSES} <= visit_names(_Builder)
    # the module of a structure: every node class that makes a row of its own
    made = {cls.visit_name for cls in NODE_CLASSES if cls.generated_row}
    assert made == {"visit_concat", "visit_split", "visit_merge", "visit_transform"}
    assert made <= visit_names(_StructureModule)


def test_a_new_structure_fails_loudly_in_a_walk_that_lacks_its_method():
    @dataclass
    class Ring(Node):
        items: list
        visit_name = "visit_ring"

    model = build_graph(loads(HEAD + 'layers = [{conv = 4, kernel = 1}]\n'))
    model.body.items.append(Ring([]))
    with pytest.raises(TypeError, match="_Walker has no visit_ring: it cannot walk a Ring node"):
        analyze(model)

    class Counter(Visitor):
        def visit_layer(self, node):
            return 1
    assert Counter().visit(model.body.items[0]) == 1
    with pytest.raises(TypeError, match="Counter has no visit_sequence"):
        Counter().visit(Sequence([]))


@pytest.mark.parametrize("path", ALL_SPECS, ids=os.path.basename)
def test_the_report_tree_hangs_every_row_once_in_table_order(path):
    report = analyze(load(path))
    tree_rows = list(report.tree.rows())
    # the very Row objects of the table, each once, in order (the input row apart)
    assert len(tree_rows) == len(report.rows) - 1
    assert all(a is b for a, b in zip(tree_rows, report.rows[1:]))
    assert report.row_tree is report.tree

    def check(node):
        if node.role in ("layer", "concat", "merge"):   # a node with a row: its own path
            assert tuple(node.row.path) == tuple(node.path)
        for child in node.children + node.body + node.shortcut:
            check(child)
    check(report.tree)


def test_a_folded_report_has_no_row_tree():
    report = analyze(load(os.path.join(SPECS, "resnet18.toml")))
    folded = replace(report, rows=fold(report.rows, 1))
    assert len(folded.rows) < len(report.rows)
    assert folded.row_tree is None
    # folding deeper than the deepest path keeps every row: the tree still holds
    assert replace(report, rows=fold(report.rows, 99)).row_tree is report.tree


def shape(node):
    """A tree written out as nested tuples: (role, name, [what is under it])."""
    under = [shape(c) for c in node.children + node.body + node.shortcut]
    return (node.role, node.name, under) if under else (node.role, node.name)


def test_the_tree_of_a_small_spec_as_written_by_hand():
    text = HEAD + '''layers = [
  {conv = 4, kernel = 3, padding = 1, name = "stem"},
  {name = "res", residual = [{conv = 8, kernel = 3, padding = 1, stride = 2, name = "c"}]},
  {name = "mix", concat = [[{conv = 2, kernel = 1, name = "p"}], [{maxpool = 3, stride = 1, padding = 1, name = "q"}]]},
  {name = "cut", split = [[], [{conv = 5, kernel = 1, name = "r"}]]},
  {heads = [{name = "out", layers = [{fc = 10, name = "fc"}]}]},
]
'''
    report = analyze(loads(text))
    assert shape(report.tree) == ("block", "", [
        ("layer", "stem"),
        ("block", "res", [("merge", "add", [("layer", "c"), ("layer", "shortcut")])]),
        ("block", "mix", [("concat", "concat", [("block", "b1", [("layer", "p")]),
                                                ("block", "b2", [("layer", "q")])])]),
        ("block", "cut", [("concat", "concat", [("block", "b1"),
                                                ("block", "b2", [("layer", "r")])])]),
        ("heads", "", [("block", "out", [("layer", "fc")])]),
    ])
    # the projection's 1x1 conv (4 -> 8 channels, stride 2) is the shortcut's row:
    # 4*8 weights + the batch norm's 2*8
    short = report.tree.children[1].children[0].shortcut[0].row
    assert short.path == ("res", "shortcut") and short.params == 4 * 8 + 2 * 8
    assert short.output_shape == (8, 4, 4)


def test_the_html_graph_draws_every_role_of_the_tree():
    from archcalc.render.report import _GRAPH_PARTS
    from archcalc.tree import ROLES
    assert set(_GRAPH_PARTS) == set(ROLES)
    roles = set()

    def collect(node):
        roles.add(node.role)
        for child in node.children + node.body + node.shortcut:
            collect(child)
    for name in ("googlenet", "resnet18", "shufflenet_v2_x1_0"):
        collect(analyze(load(os.path.join(SPECS, name + ".toml"))).tree)
    assert roles <= set(ROLES) and {"layer", "block", "concat", "merge"} <= roles


# -- random nested structures: the tree follows the table whatever the nesting ---

def _nested(draw, channels: int, depth: int):
    """(layer tables, output channels, structures written) for a C x 8 x 8 input;
    every part keeps H and W, so any nesting is valid."""
    from hypothesis import strategies as st
    choices = ["conv"] + (["residual", "concat", "split", "dense", "layers"] if depth else [])
    if channels < 2:
        choices = [c for c in choices if c != "split"]
    what = draw(st.sampled_from(choices))
    if what == "conv":
        out = draw(st.integers(1, 6))
        return [{"conv": out, "kernel": draw(st.sampled_from([1, 3])), "padding": "same"}], out, 0
    if what == "split":
        first = draw(st.integers(1, channels - 1))
        body, c, n = _nested(draw, channels - first, depth - 1)
        return [{"split": [[], body], "sizes": [first, channels - first]}], first + c, n + 1
    if what == "concat":
        a, ca, na = _nested(draw, channels, depth - 1)
        b, cb, nb = _nested(draw, channels, depth - 1)
        return [{"concat": [a, b]}], ca + cb, na + nb + 1
    body, c, n = _nested(draw, channels, depth - 1)
    if what == "residual":
        return [{"residual": body, "shortcut": "auto"}], c, n + 1
    if what == "dense":
        return [{"dense": body}], channels + c, n + 1
    return [{"layers": body}], c, n


def _nested_networks():
    from hypothesis import strategies as st

    @st.composite
    def networks(draw):
        start = channels = draw(st.integers(1, 4))
        layers, merges = [], 0
        for i in range(draw(st.integers(1, 4))):
            more, channels, n = _nested(draw, channels, draw(st.integers(0, 3)))
            layers += more
            merges += n
            if draw(st.booleans()):   # a head reads the tensor; the main line goes on
                layers.append({"heads": [{"name": f"head{i}", "layers": [
                    {"global_avgpool": True}, {"fc": 3}]}]})
        return start, layers, merges
    return networks()


def test_random_nested_structures_hang_every_row_on_the_tree():
    from hypothesis import given, note, settings

    from archcalc.render.report import fragment
    from strategies import network_text

    @settings(max_examples=60)
    @given(_nested_networks())
    def check(case):
        channels, layers, merges = case
        text = network_text((channels, 8, 8), layers)
        note(text)
        report = analyze(loads(text))
        tree_rows = list(report.tree.rows())
        assert len(tree_rows) == len(report.rows) - 1
        assert all(a is b for a, b in zip(tree_rows, report.rows[1:]))
        joins = []

        def walk(node):
            if node.role in ("concat", "merge"):
                joins.append(node)
                assert tuple(node.row.path) == tuple(node.path)
            for child in node.children + node.body + node.shortcut:
                walk(child)
        walk(report.tree)
        # one concat or merge node per structure the spec wrote, each with its row
        assert len(joins) == merges == sum(1 for r in report.rows if r.merge)
        assert "ac-graph" in fragment([report])
    check()
