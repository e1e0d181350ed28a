"""`tell.mdtext`: a value written into Markdown renders as itself, in every place tell puts one (a paragraph, a
list item, a heading, a table cell, an image's alt text), never as markup: no link, image, HTML, list, heading or
extra cell. Checked by rendering with markdown-it-py (CommonMark + tables), as report.html is made."""

from __future__ import annotations

import html
import re

import pytest
from markdown_it import MarkdownIt

from tell.mdtext import Markup, bracketed, code, fence, table, text

MD = MarkdownIt("commonmark", {"html": False}).enable("table")

HOSTILE = ["json_strict", "_a_", "[0, 1]", "![x](%2Fetc%2Fpasswd)", "[open](https:host)", "a|b\nc", "1. x", "# h",
           "- x", "---", "<script>alert(1)</script>", "x]", "> q", "`c`", "a*b*", "__x__", "tell-no-anchor", "-0.5",
           "a\\]", "<https://evil>", "&lt;b&gt;", "&#91;x&#93;(y)", "[a]: https://evil", "x\\", "***", "=== ", "+ y",
           "2) z", "[a][b]", "~~s~~", "a  \nb", "\\*", "    indented", "\tx", "<!-- c -->", "[x]\n\n[x]: /evil",
           "a\r\nb\u2028c", "![a](b \"t\")", "[![i](j)](k)"]


def shown(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page)).strip()


def folded(s: str) -> str:
    return re.sub(r"\r\n|[\r\n\u2028]", " ", s).strip()


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("where, wrap, tags", [
    ("paragraph", lambda t: t, {"p"}),
    ("list item", lambda t: "- " + t, {"ul", "li"}),
    ("heading", lambda t: "### " + t, {"h3"}),
    ("after a list item's text", lambda t: "- the set " + t, {"ul", "li"}),
])
def test_text_renders_as_itself(value, where, wrap, tags):
    page = MD.render(wrap(text(value)))
    assert set(re.findall(r"<([a-z0-9]+)", page)) <= tags, page
    assert shown(page).removeprefix("the set ").strip() == folded(value)


@pytest.mark.parametrize("value", HOSTILE)
def test_a_table_cell_stays_one_cell_and_renders_as_itself(value):
    page = MD.render("\n".join(table(["name", "passed"], [[value, "NO"]])))
    cells = re.findall(r"<td>(.*?)</td>", page, flags=re.S)
    assert len(cells) == 2 and html.unescape(re.sub(r"<[^>]+>", "", cells[0])).strip() == folded(value)
    assert cells[1] == "NO" and set(re.findall(r"<([a-z0-9]+)", page)) <= {"table", "thead", "tbody", "tr", "th", "td"}


@pytest.mark.parametrize("value", HOSTILE)
def test_alt_text_and_code_spans_hold_any_value(value):
    page = MD.render(f"![{bracketed(value)}](report_files/a.png)")
    assert page.count("<img") == 1 and 'src="report_files/a.png"' in page
    assert html.unescape(re.search(r'alt="([^"]*)"', page).group(1)).strip() == folded(value)
    span = MD.render(code(value))
    assert span.count("<code>") == 1
    assert html.unescape(re.search(r"<code>(.*)</code>", span, re.S).group(1)).strip() == folded(value)


def test_a_fence_holds_backtick_fences_verbatim():
    body = "before\n```\nnot code's end\n````\nafter"
    page = MD.render("\n".join(fence(body)))
    assert page.count("<pre>") == 1 and html.unescape(re.search(r"<code[^>]*>(.*)</code>", page, re.S).group(1)) \
        == body + "\n"


def test_markup_passes_and_plain_text_does_not():
    assert text(Markup("**chosen**")) == "**chosen**" and "<strong>" in MD.render(text(Markup("**chosen**")))
    assert "<strong>" not in MD.render(text("**chosen**"))
