"""User strings (a spec's names, notes, source) are data, never markup or
terminal codes: specs come from strangers."""
from __future__ import annotations

from ..errors import printable


def clean(text) -> str:
    """The text on one line with control characters (ANSI escapes, bells,
    carriage returns) shown as '?'; tabs and newlines become spaces."""
    return printable(str(text).replace("\t", " ").replace("\n", " "))


def markup(text) -> str:
    """For a rich string that is parsed as markup: cleaned and escaped."""
    from rich.markup import escape
    return escape(clean(text))


def rich_text(text, style: str = ""):
    """A rich Text (never parsed as markup) of cleaned text."""
    from rich.text import Text
    return Text(clean(text), style=style)
