"""`archcalc import timm:NAME` (timm's create_model, never pretrained), the
default --input of a target, torchvision's segmentation models (a forward
returning {"out": x}), and the summary of benchmarks/import_sweep.py on fake
records (no model imported)."""
import importlib.util
import json
import os
import sys

import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from archcalc.analysis import analyze
from archcalc.cli import is_import_target, main
from archcalc.errors import MissingExtra, SpecError
from archcalc.spec.loader import load, loads
from conftest import ROOT

torch = pytest.importorskip("torch")
tv = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from archcalc.torch import importer  # noqa: E402
from archcalc.torch.importer import targets as import_targets  # noqa: E402


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def meta_macs(model, shape) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *shape, device="meta"))
    return counter.get_total_flops() // 2


# -- timm:NAME ------------------------------------------------------------------


def test_timm_targets_are_import_targets():
    assert is_import_target("timm:resnet18")
    assert is_import_target("timm:resnet50.a1_in1k")     # a pretrained tag
    assert import_targets.timm_name("timm:resnet50.a1_in1k") == "resnet50.a1_in1k"
    assert import_targets.is_timm("timm:resnet18")
    assert not import_targets.is_timm("torchvision.models:resnet18")


def test_unknown_timm_name_is_one_line_with_close_matches():
    code, out, err = run("import", "timm:resnet51")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "timm has no model 'resnet51'" in err and "resnet51q" in err and "resnet50" in err


@pytest.mark.parametrize("target", ["timm:", "timm:res-net", "timm:a/b"])
def test_malformed_timm_name_exits_2(target):
    code, _, err = run("import", target)
    assert code == 2 and err.startswith("error:") and "Traceback" not in err


def test_pretrained_is_refused_nothing_downloads():
    code, _, err = run("import", "timm:resnet18", "--kwargs", '{"pretrained": true}')
    assert code == 2 and "never downloads" in err and err.count("\n") == 1


def test_timm_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)   # `import timm` raises ImportError
    with pytest.raises(MissingExtra, match=r'\.\[timm\]'):
        import_targets.timm_name("timm:resnet18")
    code, _, err = run("import", "timm:resnet18")
    assert code == 2 and "timm" in err and ".[timm]" in err and err.count("\n") == 1


def test_default_input_is_the_pretrained_configs():
    """Inception-v3 is a 299x299 network (Szegedy et al. 2016); timm says so."""
    with importer.empty_weights():
        model = timm.create_model("inception_v3", pretrained=False)
    assert import_targets.timm_input(model) == (3, 299, 299)
    with importer.empty_weights():
        model = timm.create_model("resnet18", pretrained=False)
    assert import_targets.timm_input(model) == (3, 224, 224)


def test_timm_kwargs_go_to_create_model_and_bad_ones_exit_2():
    built = import_targets.load("timm:resnet18", '{"num_classes": 10}', meta=True)
    assert built.model.fc.out_features == 10 and built.label == "timm:resnet18"
    code, _, err = run("import", "timm:resnet18", "--kwargs", '{"no_such_arg": 1}')
    assert code in (1, 2) and err.count("\n") == 1 and "Traceback" not in err


def test_timm_resnet18_imports_exactly():
    """timm's ResNet-18 is He et al.'s: 11,689,512 params (torchvision's too);
    MACs as PyTorch's FlopCounterMode counts them on the meta device."""
    built = import_targets.load("timm:resnet18", meta=True)
    done = importer.import_module(built.model, built.default_input, label=built.label)
    report = analyze(loads(done.text, file="timm:resnet18"))
    assert report.totals["params"] == sum(p.numel() for p in built.model.parameters()) \
        == 11_689_512
    assert report.totals["macs"] == meta_macs(built.model, (3, 224, 224)) == 1_814_073_344
    assert not report.free_symbols and not done.opaque


def test_cli_imports_timm_at_its_default_input(tmp_path):
    out = tmp_path / "r18.toml"
    code, _, err = run("import", "timm:resnet18", "--kwargs", '{"num_classes": 10}', "-o", out)
    assert code == 0, err
    report = analyze(load(str(out)))
    assert report.totals["params"] == 11_689_512 - 1000 * 513 + 10 * 513   # fc: 512 -> 10
    assert "timm:resnet18" in out.read_text() and "input = [3, 224, 224]" in out.read_text()


# -- torchvision segmentation ---------------------------------------------------


SEGMENTATION_KWARGS = '{"weights": null, "weights_backbone": null}'


def test_fcn_resnet50_imports_its_single_output():
    """FCN (Long et al. 2015) on ResNet-50: the forward returns {"out": x},
    the map upsampled to the input; params 32,957,013 (no auxiliary head)."""
    built = import_targets.load("torchvision.models.segmentation:fcn_resnet50",
                                SEGMENTATION_KWARGS, meta=True)
    shape = (3, 96, 128)
    done = importer.import_module(built.model, shape, label=built.label)
    report = analyze(loads(done.text, file="fcn"))
    total = sum(p.numel() for p in built.model.parameters())
    assert report.totals["params"] == total == 32_957_013
    assert report.totals["macs"] == meta_macs(built.model, shape)
    assert tuple(report.rows[-1].output_shape) == (21, 96, 128)


def test_several_outputs_are_the_spec_s_outputs(tmp_path):
    """{"out", "aux"}: both outputs, named in [model] outputs (the general graph)."""
    out = tmp_path / "fcn.toml"
    code, _, err = run("import", "torchvision.models.segmentation:fcn_resnet50", "--kwargs",
                       '{"weights": null, "weights_backbone": null, "aux_loss": true}',
                       "--input", "3x64x64", "-o", out)
    assert code == 0, err
    assert 'outputs = ["upsample", "upsample_1"]' in out.read_text()


# -- the sweep's summary (fake records: nothing imported) --------------------------


def sweep_module():
    path = os.path.join(ROOT, "benchmarks", "import_sweep.py")
    spec = importlib.util.spec_from_file_location("import_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SWEEP = sweep_module()


def fake(target, family, status, seconds=1.0, **kw):
    return {"target": target, "family": family, "status": status, "seconds": seconds,
            "error": kw.pop("error", None), **kw}


FAKE = [
    fake("timm:resnet18", "timm.resnet", "exact", params_ok=True, macs_ok=True),
    fake("timm:resnet50", "timm.resnet", "mismatch", params_ok=True, macs_ok=False),
    fake("timm:efficientnet_b0", "timm.efficientnet", "opaque", 4.0, opaque_rows=49,
         ops=["torch.nn.functional.batch_norm"], error="Unsupported: cannot import ..."),
    fake("timm:convnext_tiny", "timm.convnext", "opaque", 2.0, opaque_rows=19,
         ops=["torch.nn.functional.batch_norm", "torch.nn.functional.layer_norm"]),
    fake("timm:dla34", "timm.dla", "failed", 3.0,
         error="SpecError: backbone: two layers of this level would share the name 'x1'"),
    fake("timm:dla60", "timm.dla", "failed", 5.0,
         error="SpecError: backbone: two layers of this level would share the name 'x22'"),
    fake("timm:huge", "timm.vit", "timeout", 180.0, error="TimedOut: over 180 s"),
]


def test_summary_counts_the_fake_sweep():
    s = SWEEP.summarize(FAKE)
    assert s["models"] == 7 and s["imported"] == 2 and s["exact"] == 1
    assert s["status"] == {"exact": 1, "exact-opaque": 0, "mismatch": 1, "opaque-mismatch": 0,
                           "opaque": 2, "failed": 2, "timeout": 1, "crashed": 0}
    assert s["with_opaque"] == 2 and s["exact_with_opaque"] == 0
    assert s["opaque_rows_median"] == 49
    causes = {c: (n, ex) for c, n, ex in s["causes"]}
    assert causes["no kind: batch_norm"] == (
        2, ["timm:efficientnet_b0", "timm:convnext_tiny"])
    # names and numbers taken out: one cause for both DLAs
    dla = [c for c in causes if "share the name" in c]
    assert len(dla) == 1 and causes[dla[0]][0] == 2
    assert causes["imports, but MACs differ"] == (1, ["timm:resnet50"])
    assert s["sole_blocker"] == {"batch_norm": 1}
    assert s["families"]["timm.dla"] == {"models": 2, "failed": 2}
    assert s["slowest"] == [["timm:huge", 180.0]]
    text = SWEEP.render_markdown(s)
    assert "| timm.resnet | 2 | 1 | 2 | 0 | 0 |" in text
    assert "- import (no opaque row): 2 (28.6%)" in text and "timm:huge: 180.0 s" in text
    assert "- import, with or without opaque rows: 4 (57.1%); exact of those: 1 (25.0%)" in text
    json.dumps(s)   # the JSON file holds it


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 30)), max_size=60,
                unique=True), st.integers(0, 70))
def test_sample_is_deterministic_and_spreads_across_families(items, n):
    targets = [{"target": f"m{family}{i}", "family": family} for family, i in items]
    picked = SWEEP.sample_across_families(targets, n)
    assert picked == SWEEP.sample_across_families(list(reversed(targets)), n)
    assert len(picked) == min(n, len(targets))
    assert len({t["target"] for t in picked}) == len(picked)
    counts = {}
    for t in picked:
        counts[t["family"]] = counts.get(t["family"], 0) + 1
    sizes = {f: sum(1 for t in targets if t["family"] == f) for f in counts}
    # no family has two more than another that still had models to give
    for f, k in counts.items():
        for g, m in counts.items():
            assert k <= m + 1 or m == sizes[g]


def test_select_only_limit_plus():
    targets = [{"target": f"timm:m{i}", "family": "timm.x"} for i in range(5)] + \
        [{"target": "torchvision.models:alexnet", "family": "torchvision.alexnet"}]
    got = SWEEP.select(targets, only="^timm:", limit=2, plus="^torchvision")
    assert [t["target"] for t in got] == ["timm:m0", "timm:m1", "torchvision.models:alexnet"]


def test_one_operation_one_family_whatever_its_spelling():
    """fx's and torch.export's names of one op; a module kept whole stays whole."""
    spellings = ["torch.nn.functional.linear", "torch._C._nn.linear",
                 "torch.ops.aten.linear.default"]
    assert {SWEEP.operation(op) for op in spellings} == {"linear"}
    assert SWEEP.operation("operator.matmul") == SWEEP.operation(
        "torch.ops.aten.matmul.default") == "matmul"
    assert SWEEP.operation("timm.models.cait.LayerScaleBlockClassAttn") == \
        "timm.models.cait.LayerScaleBlockClassAttn"
    # an import that failed even with --allow-opaque: its ops read from the message
    rec = fake("timm:x", "timm.x", "failed", error=(
        "Unsupported: cannot import timm:x: 5 operation(s) have no archcalc kind: "
        "timm.models.efficientvim.EfficientViMBlock (its output is not one tensor): 4 calls, "
        "at stages.0; torch.nn.functional.batch_norm: 1 call, at bn1. --allow-opaque ..."))
    assert SWEEP.error_family(rec) == ["no kind: batch_norm",
                                       "no kind: timm.models.efficientvim.EfficientViMBlock"]


def test_error_family_takes_out_names_and_numbers():
    a = SWEEP.error_family(fake("a", "f", "failed", error="SpecError: cannot import timm:a: "
                                "layer 'x' has 3 inputs"))
    b = SWEEP.error_family(fake("b", "f", "failed", error="SpecError: cannot import timm:b: "
                                "layer 'yy' has 12 inputs"))
    assert a == b
    with pytest.raises(SpecError):
        import_targets.timm_name("timm:not a name")


def test_from_json_summarizes_saved_records(tmp_path, capsys):
    """--from-json imports nothing: a later file's record replaces an earlier one's."""
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    saved = {"args": {"workers": 2, "timeout": 180, "sample": None, "only": None,
                      "limit": None, "plus": None}, "complete": True,
             "versions": {"torch": "t", "torchvision": "v", "timm": "1.0.31"}}
    first.write_text(json.dumps({**saved, "records": FAKE}))
    fixed = fake("timm:dla34", "timm.dla", "exact", params_ok=True, macs_ok=True)
    second.write_text(json.dumps({**saved, "records": [fixed]}))
    SWEEP.main(["--from-json", str(first), str(second), "--out", str(tmp_path / "out")])
    data = json.loads((tmp_path / "out" / "import_sweep.json").read_text())
    assert data["summary"]["models"] == 7 and data["summary"]["exact"] == 2
    assert "- exact (params == sum(numel)" in capsys.readouterr().out
    assert "timm 1.0.31" in (tmp_path / "out" / "import_sweep.md").read_text()


def test_resume_keeps_the_records_and_imports_only_what_is_missing(tmp_path):
    """Every selected target already has a record: nothing is imported again."""
    saved = tmp_path / "run.json"
    done = [fake("timm:resnet18", "timm.resnet", "exact", params_ok=True, macs_ok=True)]
    saved.write_text(json.dumps({"records": done}))
    SWEEP.main(["--only", "^timm:resnet18$", "--resume", str(saved), "--workers", "1",
                "--out", str(tmp_path / "out")])
    data = json.loads((tmp_path / "out" / "import_sweep.json").read_text())
    assert data["records"] == done and data["summary"]["exact"] == 1
