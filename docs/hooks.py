"""MkDocs hook: the CLI and kinds references are generated from the code at
every build (archcalc/docs.py), never committed, so they cannot go stale."""
from mkdocs.structure.files import File

from archcalc.docs import GENERATED


def on_files(files, config):
    for name, make in GENERATED.items():
        files.append(File.generated(config, name, content=make()))
    return files
