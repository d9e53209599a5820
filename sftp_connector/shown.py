"""Text from outside (remote file names, cell values, error causes that quote them) as a terminal may show it.

A partner names the files and fills the cells. A name holding ESC starts an escape sequence
(retitle the window, clear the screen), a bidi override (U+202E) makes `bidi\\u202egpj.csv` display
as `bidicsv.jpg`, and a newline starts what looks like a line of its own, a forged log line say.
Every human-readable output passes such text through `visible`: control characters, the bidi
controls and the invisible direction marks come out escaped as Python writes them (`\\x1b`,
`\\u202e`, `\\n`). JSON output needs nothing of this: JSON escapes control characters itself.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls (newline and tab too: a table cell or a line holds one line), the bidi embeddings,
overrides and isolates, and the direction marks."""


def visible(text: str, *, keep: str = "") -> str:
    """Given text from outside, return it with every unsafe character escaped, except those in `keep`."""
    return _UNSAFE.sub(lambda found: found.group() if found.group() in keep else _escaped(found.group()), text)


def _escaped(char: str) -> str:
    return char.encode("unicode_escape").decode("ascii")
