"""The fuzz property: any TOML document, valid or corrupted, gives a report or
a SpecError, nothing else, within a memory budget (an alarm is the hang
guard, not a speed check). 1,000 documents per run by default, 5,000 in the
slow run (-m slow); ARCHCALC_FUZZ_EXAMPLES sets the default run's number. A
failure prints the document. Drawing the documents is most of the cost.
"""
import io
import os
import resource
import signal

import pytest

from hypothesis import HealthCheck, given, settings
from rich.console import Console

from archcalc.analysis import analyze
from archcalc.errors import SpecError
from archcalc.render.table import render_rich
from archcalc.spec.loader import loads
from spec_documents import corrupted_texts, documents

EXAMPLES = int(os.environ.get("ARCHCALC_FUZZ_EXAMPLES", "1000"))
SIZES = [EXAMPLES, pytest.param(5000, marks=pytest.mark.slow)]
SECONDS = 60          # per document: a hang is a failure, not a stuck CI
MEMORY_BYTES = 1_500_000_000


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"a document took over {SECONDS} s")


def outcome(text: str) -> str:
    """'report' or 'error: ...'; anything else propagates and fails the test."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS)
    try:
        spec = loads(text, file="fuzz.toml")
        report = analyze(spec)
        report.to_json()
        render_rich(report, Console(file=io.StringIO(), width=200))
        return "report"
    except SpecError as e:
        message = str(e)
        assert message and "\n" not in message and "\x1b" not in message, message
        return "error: " + message
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _check(text, seen):
    before = _peak_rss()
    seen.append(outcome(text).split(":")[0])
    assert _peak_rss() - before < MEMORY_BYTES


FUZZ = settings(max_examples=EXAMPLES // 2, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("examples", SIZES)
def test_documents_give_a_report_or_a_spec_error(examples):
    seen = []

    @settings(FUZZ, max_examples=examples // 2)
    @given(documents())
    def run(text):
        _check(text, seen)
    run()
    # the generator reaches both outcomes: it is not only testing the parser
    assert seen.count("report") >= 1, "no generated document was valid"
    assert seen.count("error") >= len(seen) // 4


@pytest.mark.parametrize("examples", SIZES)
def test_corrupted_texts_give_a_report_or_a_spec_error(examples):
    seen = []

    @settings(FUZZ, max_examples=examples // 2)
    @given(corrupted_texts())
    def run(text):
        _check(text, seen)
    run()
    assert seen.count("error") >= 1
