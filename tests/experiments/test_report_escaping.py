"""A report meant to be shared never carries a local file or a live link, and its tables keep their columns,
whatever the names (sets come from file names), claims and other spec text hold (issue 40, items 1-3)."""

from __future__ import annotations

import base64
import json
import re

from experiments.test_report import md_table, ones_zeros, report, section, write_sweep


def rename_set(folder, old, new):
    """The set `old` of a sweep folder renamed `new` in results.jsonl and item_scores.jsonl (a set is named after
    its eval file's stem, so any file name can become one)."""
    for name in ("results.jsonl", "item_scores.jsonl"):
        rows = [json.loads(x) for x in (folder / name).read_text().splitlines()]
        for r in rows:
            if r.get("set") == old:
                r["set"] = new
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_set_named_like_an_image_of_a_local_file_does_not_put_that_file_in_the_page(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's private key")
    encoded = str(secret).replace("/", "%2F")
    evil = f"![x](..%2F..%2F..%2F..%2F..%2F..%2F..%2F..{encoded})"
    folder = write_sweep(tmp_path / "sw", ones_zeros(range(3)))
    rename_set(folder, "tsk", evil)
    md, _ = report(folder)
    page = (folder / "report.html").read_text()
    leaked = base64.b64encode(secret.read_bytes()).decode()
    assert leaked not in page and "private key" not in page
    # the only images are the plots this report drew, each inlined; the name is shown as text
    assert page.count("<img") == page.count("data:image/png;base64,") == md.count("](report_files/") > 0
    assert all((folder / "report_files" / m).is_file() for m in re.findall(r"\]\(report_files/([^)]+)\)", md))
    assert evil.replace("%2F", "/") not in page and "![x](" in page.replace("&quot;", '"')
    assert not list((folder / "report_files").glob("*%*")) and not list(tmp_path.glob("*.png"))


def test_the_page_inlines_only_plots_it_drew(tmp_path):
    """Even Markdown that names another image (none can come from a name now) gets no file inlined."""
    from tell.experiments.report import _html

    figs = tmp_path / "report_files"
    figs.mkdir()
    (figs / "drawn.png").write_bytes(b"\x89PNG drawn")
    (tmp_path / "outside.png").write_bytes(b"\x89PNG outside")
    page = _html("![a](report_files/drawn.png) ![b](outside.png) ![c](report_files/..%2Foutside.png) "
                 "![d](report_files/../outside.png)", figs)
    assert page.count("data:image/png;base64,") == 1 and base64.b64encode(b"\x89PNG drawn").decode() in page
    assert base64.b64encode(b"\x89PNG outside").decode() not in page and page.count("image not inlined") == 3


def test_a_name_shaped_like_a_link_is_not_a_link(tmp_path):
    link = "[open](https:host)"
    folder = write_sweep(tmp_path / "sw", ones_zeros(range(3)))
    rename_set(folder, "tsk", link)
    md, _ = report(folder)
    page = (folder / "report.html").read_text()
    assert "<a " not in page and "href" not in page and link in page


def test_a_pipe_or_newline_in_a_claim_keeps_a_failed_controls_row_in_its_columns(tmp_path):
    spec = {"model": "m", "seeds": [0, 1, 2],
            "controls": [{"id": "C1", "claim": "the task | is\nlearnable", "method": "tell", "set": "tsk",
                          "at_least": 2.0}]}
    folder = write_sweep(tmp_path / "sw", ones_zeros(range(3)), spec=spec)
    md, _ = report(folder)
    (row,) = md_table(section(md, "## Controls"), "control")
    assert len(row) == 6 and row[0] == "C1" and row[1] == "the task | is learnable" and row[5] == "NO"
    page = (folder / "report.html").read_text()
    ctrl = page[page.index("<h2>Controls</h2>"):]
    first = re.search(r"<tbody>\s*<tr>(.*?)</tr>", ctrl, re.S).group(1)
    assert len(re.findall(r"<td>", first)) == 6 and first.rstrip().endswith("<td>NO</td>")
