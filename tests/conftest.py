"""Shared test settings: hypothesis profiles, the `slow` marker, memory hygiene
between modules, and the suite's wall time and peak RSS in the summary
(docs/testing.md).

The whole suite runs in one process, so what a module leaves behind (models,
caches, freed-but-unreturned malloc arenas) adds to the peak of every module
after it; CI's budget is 10 minutes and 4 GB on 2 cores.
"""
import ctypes
import gc
import json
import os
import resource
import sys
import time

import pytest
from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = os.path.join(ROOT, "specs")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

settings.register_profile("default", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
# CI: no example database (a fresh clone has none to replay); tests that set
# their own max_examples keep it, the others draw hypothesis's default 100
settings.register_profile("ci", parent=settings.get_profile("default"), database=None)
settings.load_profile("ci" if os.environ.get("CI", "").lower() in ("1", "true") else "default")

SLOW = os.environ.get("ARCHCALC_SLOW", "") not in ("", "0")
_STARTED = time.monotonic()



def _precompiled_archcalc() -> None:
    """The CLI subprocesses the suite starts (hundreds) would each compile
    archcalc's modules anew where the environment sets PYTHONDONTWRITEBYTECODE
    (this machine's and CI's do): ~0.4 s a process. archcalc is compiled once,
    here (its __pycache__, ignored by git; only what is stale is written), and
    they read it; they write none, so a subprocess a test kills at its memory
    or CPU limit cannot leave a truncated file."""
    if sys.flags.dont_write_bytecode:
        import compileall
        compileall.compile_dir(os.path.join(ROOT, "archcalc"), quiet=2)


_precompiled_archcalc()


def spec_path(name: str) -> str:
    return os.path.join(SPECS, name)


def pytest_configure(config):
    # pyproject's addopts deselect `slow` (-m "not slow"); ARCHCALC_SLOW=1 runs
    # everything, as `-m ""` does; an explicit -m on the command line wins
    if SLOW and config.option.markexpr == "not slow":
        config.option.markexpr = ""


def _return_freed_memory():
    gc.collect()
    try:  # glibc keeps freed arenas mapped; hand them back to the OS
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# a test that leaves the process this much bigger than it found it (a full-size
# model built, traced, measured) is followed by a collection and a trim; the
# others cost nothing (gc.collect takes ~0.1 s with torch loaded)
GROWTH_TO_TRIM = 200 * 2**20


@pytest.fixture(autouse=True)
def _free_memory_after_a_heavy_test():
    before = _rss_bytes() if os.path.exists("/proc/self/statm") else None
    yield
    if before is not None and _rss_bytes() - before > GROWTH_TO_TRIM:
        _return_freed_memory()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small inputs on a shared 2-core machine: intra-op threads only add
    contention; one thread for the module, restored afterwards. A module
    asks for it with pytestmark = pytest.mark.usefixtures("one_torch_thread")."""
    try:
        import torch
    except ImportError:     # the analysis tests need no torch
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _free_memory_after_each_module():
    """Module-scoped fixtures (imported models, built networks) are torn down
    before this one: collect them and trim the heap so the next module starts
    from the floor, not from this module's peak."""
    yield
    _return_freed_memory()


def _peak_rss_bytes(who) -> int:
    return resource.getrusage(who).ru_maxrss * 1024  # KiB on Linux


def pytest_terminal_summary(terminalreporter):
    """The budget's two figures, on every run (.ci/run checks them)."""
    stats = {"wall_seconds": round(time.monotonic() - _STARTED, 1),
             "peak_rss_bytes": _peak_rss_bytes(resource.RUSAGE_SELF),
             "peak_child_rss_bytes": _peak_rss_bytes(resource.RUSAGE_CHILDREN)}
    terminalreporter.write_line(
        f"suite: wall {stats['wall_seconds']:.0f} s, peak RSS "
        f"{stats['peak_rss_bytes'] / 1e9:.2f} GB (largest subprocess "
        f"{stats['peak_child_rss_bytes'] / 1e9:.2f} GB)")
    path = os.environ.get("ARCHCALC_SUITE_STATS")
    if path:
        with open(path, "w") as f:
            json.dump(stats, f)
