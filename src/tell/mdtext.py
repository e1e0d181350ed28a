"""Text that tell writes into Markdown (report.md and its HTML page, study.md, model cards): one place that makes
a value read as itself, never as markup.

Names (sets come from file names), claims, reasons and other spec text are the user's: rendered bare, a name
like `![x](%2Fetc%2Fpasswd)` became an image that the HTML page inlined, `[open](https:host)` a live link, and a
`|` an extra table cell that pushed a control's "passed = NO" out of its column. `text` backslash-escapes every
character where CommonMark (and GitHub's tables) would give it a meaning, and folds line breaks into spaces; `table` escapes
every cell; `Markup` marks the few strings tell itself writes as Markdown (bold verdicts), which pass unchanged.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

# Inline markup anywhere: escapes, code spans, emphasis with `*`, autolinks and HTML (`<`), entities, table cells,
# GFM strikethrough. `!` and `[` need no escape: no link, image or link definition forms once `]` cannot be
# followed by `(`, `[` or `:` (see _CLOSE; so a caller never writes `(`, `[` or `:` right after a `text`, or uses
# `bracketed`), and `>` means something only at the start of a line (see _LEADING).
_INLINE = re.compile(r"([\\`*<&|~])")
_CLOSE = re.compile(r"\](?=[(\[:])")
# `_` opens or closes emphasis only beside a non-alphanumeric character: `json_strict` stays as it is
_UNDERSCORES = re.compile(r"(?<![^\W_])_+|_+(?![^\W_])")
# Block markup at the start of a line: a heading, a quote, a list item, a numbered item, a thematic break
_LEADING = re.compile(r"^(\s*)(#{1,6}(?=\s|$)|>|[-+=](?=\s|$)|\d{1,9}(?=[.)](?:\s|$))|-(?=(?:\s*-){2,}\s*$))")
_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


class Markup(str):
    """A string tell wrote as Markdown on purpose (`**chosen**`): `text` and `table` leave it as it is."""


def text(value: Any, brackets: bool = False) -> str:
    """`value` as literal inline Markdown text: markup characters backslash-escaped, line breaks made spaces
    (`brackets`: every `[` and `]` too)."""
    if isinstance(value, Markup):
        return str(value)
    s = _BREAKS.sub(" ", "" if value is None else str(value))
    s = _INLINE.sub(r"\\\1", s)
    s = re.sub(r"([\[\]])", r"\\\1", s) if brackets else _CLOSE.sub(r"\\]", s)
    s = _UNDERSCORES.sub(lambda m: "\\_" * len(m.group()), s)
    m = _LEADING.match(s)
    if m:  # `1.` -> `1\.`, `#` -> `\#`, `-` -> `\-`: a paragraph, not a list, heading or rule
        lead, mark = m.group(1), m.group(2)
        rest = s[m.end():]
        s = lead + (mark + "\\" + rest if mark[0].isdigit() else "\\" + mark + rest)
    lead = len(s) - len(s.lstrip())
    # leading blanks as character references: four of them (or a tab) would start a code block
    return "".join(f"&#{ord(c)};" for c in s[:lead]) + s[lead:]


def bracketed(value: Any) -> str:
    """`text` with every square bracket escaped too: for text inside `[...]` (an image's alt text)."""
    return text(value, brackets=True)


def code(value: Any) -> str:
    """`value` as one inline code span whatever backticks it holds (CommonMark: a longer fence, padded). Not for a
    table cell: there `table` escapes the cell as text."""
    s = _BREAKS.sub(" ", str(value))
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or (s.startswith(" ") and s.endswith(" ") and s.strip()) else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


def fence(value: Any, info: str = "text") -> list[str]:
    """A fenced code block holding `value` verbatim: the fence is longer than any backtick run in it."""
    s = str(value)
    ticks = "`" * max(3, max((len(r) for r in re.findall(r"`+", s)), default=0) + 1)
    return [ticks + info, *s.splitlines(), ticks]


def table(header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> list[str]:
    """A GitHub/CommonMark table with every cell escaped (`text`), one row per row whatever a cell holds."""
    header = [text(h) for h in header]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(text(c) for c in r) + " |" for r in rows] + [""]
