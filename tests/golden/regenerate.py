"""Writes the golden outputs that tests/test_golden.py compares byte for byte:
`archcalc table SPEC --format json` for every shipped spec, and the spec text
`archcalc import` writes for twelve torchvision models. Run it only when a
change of figures or of the writer is intended, and say so in the commit:

    python tests/golden/regenerate.py            # tables (pure Python, seconds)
    python tests/golden/regenerate.py --import   # and the imports (torch, a minute)
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SPECS = os.path.join(ROOT, "specs")
sys.path.insert(0, ROOT)

# the twelve torchvision models the default test run imports (tests/test_import.py SUBSET)
IMPORTS = {"resnet18": 224, "mobilenet_v3_small": 224, "shufflenet_v2_x0_5": 224,
           "squeezenet1_1": 224, "densenet121": 224, "googlenet": 224, "inception_v3": 299,
           "efficientnet_b0": 224, "regnet_y_400mf": 224, "mnasnet0_5": 224,
           "convnext_tiny": 224, "vit_b_16": 224}


def shipped_specs() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(SPECS) if f.endswith(".toml"))


def table_json(name: str) -> str:
    from click.testing import CliRunner
    from archcalc.cli import main
    result = CliRunner().invoke(main, ["table", os.path.join(SPECS, name + ".toml"),
                                       "--format", "json"])
    if result.exit_code != 0:
        raise SystemExit(f"table {name}: exit {result.exit_code}: {result.output[-300:]}")
    return result.stdout


def import_text(name: str) -> str:
    import torch
    import torchvision
    from archcalc.torch.importer import import_module
    kwargs = {"aux_logits": False, "init_weights": False} if name in (
        "googlenet", "inception_v3") else {}
    try:
        with torch.device("meta"):     # shapes and params only: no weights to initialise
            model = torchvision.models.get_model(name, weights=None, **kwargs)
    except NotImplementedError:        # RegNet computes its widths with tensors
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    size = IMPORTS[name]
    return import_module(model, (3, size, size), name=name,
                         label=f"torchvision.models:{name}").text


def main(argv: list[str]) -> None:
    for name in shipped_specs():
        with open(os.path.join(HERE, "table", name + ".json"), "w", encoding="utf-8") as fh:
            fh.write(table_json(name))
    if "--import" in argv:
        for name in IMPORTS:
            with open(os.path.join(HERE, "import", name + ".toml"), "w",
                      encoding="utf-8") as fh:
                fh.write(import_text(name))


if __name__ == "__main__":
    main(sys.argv[1:])
