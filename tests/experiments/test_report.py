"""`tell report` on small synthetic sweep folders whose answers are known (no model, no training)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import yaml

from tell.experiments.evidence import aggregate, load_results
from tell.experiments.report import make_report

N = 40  # test items per set


def cell(method, budget, ratio, seed, task, gen=None, *, health="ok", reason="", selected=True, lr=1e-4):
    """One finished cell: its per-item scores on the task set ("tsk") and, optionally, a general set ("gen")."""
    scores = {"tsk": task} if gen is None else {"tsk": task, "gen": gen}
    if method == "base":
        budget, ratio, health, lr = None, None, None, None
    return {"method": method, "budget": budget, "ratio": 0.0 if method == "sft" else ratio, "seed": seed,
            "scores": {k: np.broadcast_to(np.asarray(v, float), (N,)) for k, v in scores.items()},
            "health": health, "reason": reason, "selected": selected, "lr": lr}


def write_sweep(folder, cells, *, items=True, old=False, spec=None, lr=None):
    """results.jsonl (+ item_scores.jsonl, spec.yaml, lr_selection.json) as the sweep writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, lines = [], []
    for c in cells:
        key = f"{c['method']}-{c['budget']}-{c['ratio']}-{c['seed']}-{c['lr']}"
        for set_name, sc in c["scores"].items():
            v = float(np.mean(sc))
            row = {"method": c["method"], "task_tokens": c["budget"] or 0,
                   "general_tokens": int((c["budget"] or 0) * (c["ratio"] or 0)), "ratio": c["ratio"],
                   "seed": c["seed"], "set": set_name, "metric": "accuracy", "value": v, "ci_low": v - 0.05,
                   "ci_high": v + 0.05, "tokens_trained": 0, "optimizer_steps": 3, "wall_s": 1.0,
                   "run_dir": f"cells/{key}", "task_tokens_requested": c["budget"]}
            meta = {"role": "general" if set_name == "gen" else "task", "lr": c["lr"], "selected": c["selected"],
                    "health": c["health"], "health_reason": c["reason"], "cell": key}
            rows.append(row if old else {**row, **meta})
            lines.append({"cell": key, "method": c["method"], "task_tokens_requested": c["budget"], "ratio": c["ratio"],
                          "seed": c["seed"], "set": set_name, "metric": "accuracy", **meta,
                          "ids": [f"{set_name}-{i}" for i in range(N)], "values": [float(x) for x in sc]})
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if items and not old:
        (folder / "item_scores.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if spec is not None:
        (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    if lr is not None:
        (folder / "lr_selection.json").write_text(json.dumps(lr))
    return folder


def report(folder, **kw):
    md = make_report(folder, **kw).read_text()
    return md, json.loads((folder / "findings.json").read_text())


def section(md, title):
    """The Markdown from heading `title` to the next heading of the same or a higher level."""
    level = title.split(" ")[0]
    start = md.index(title + "\n") if title + "\n" in md else md.index(title)
    rest = md[start + len(title):]
    stops = [m.start() for m in re.finditer(r"^#{1,%d} " % len(level), rest, flags=re.M)]
    return md[start:start + len(title) + (stops[0] if stops else len(rest))]


def md_table(text, first_col):
    """Rows (lists of cells) of the first Markdown table in `text` whose header starts with `first_col`."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_col} |"))
    out = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        # as a renderer reads it: cells split at unescaped pipes, then backslash escapes undone (`tell.mdtext`)
        cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
        out.append([re.sub(r"\\(.)", r"\1", c.strip()) for c in cells])
    return out


def ones_zeros(seeds, tell=1.0, sft=0.0, base=0.0):
    return ([cell("base", None, None, s, base) for s in seeds] + [cell("sft", 1000, 0, s, sft) for s in seeds]
            + [cell("tell", 1000, 1.0, s, tell) for s in seeds])


def logistic_items(x, lo=0.1, hi=0.9, k=3.0, x0=3.5):
    p = lo + (hi - lo) / (1 + math.exp(-k * (x - x0)))
    return (np.arange(N) < round(p * N)).astype(float)


def scaling_cells(ratios, seeds=range(3)):
    return [cell("tell", 1000, r, s, logistic_items(math.log10(1000 * r))) for r in ratios for s in seeds]


def efficiency_cells(sft_budgets, ratios=(1.0, 3.0)):
    vals = {100: 0.2, 300: 0.4, 1000: 0.6, 3000: 0.8}
    cells = [cell("sft", b, 0, s, (np.arange(N) < vals[b] * N).astype(float)) for b in sft_budgets for s in range(3)]
    return cells + [cell("tell", 100, r, s, (np.arange(N) < 0.5 * N).astype(float)) for r in ratios for s in range(3)]


def test_three_seeds_tell_all_right_sft_all_wrong_is_better_and_findings_json_matches_markdown(tmp_path):
    rng = np.random.default_rng(0)
    extra = [cell("sft-matched", 1000, 1.0, s, (rng.random(N) < 0.9).astype(float)) for s in range(3)]
    extra += [cell("tell-no-anchor", 1000, 1.0, s, 1.0) for s in range(3)]
    folder = write_sweep(tmp_path / "sw", ones_zeros(range(3)) + extra)
    md, fj = report(folder)
    (f,) = [f for f in fj if f["comparison"] == "tell vs sft"]
    assert f["verdict"] == "better" and f["ci95"][0] > 0 and f["diff"] == pytest.approx(1.0)
    assert f["seeds"] == 3 and f["seeds_used"] == [0, 1, 2] and f["items"] == N
    assert [g["verdict"] for g in fj if g["comparison"] == "tell vs tell-no-anchor"] == ["no detectable difference"]
    # The Markdown findings table holds exactly the comparisons in findings.json, with the same numbers.
    rows = md_table(section(md, "## Findings"), "metric")
    ours = [f for f in fj if f["section"] == "findings"]
    assert len(rows) == len(ours) == 3
    for row, f in zip(rows, ours):
        assert row[3] == f["comparison"] and row[9] == f["verdict"] and int(row[4]) == f["seeds"]
        assert float(row[7]) == pytest.approx(f["diff"], abs=1e-3)
        lo, hi = (float(x) for x in row[8].strip("[]").split(","))
        assert (lo, hi) == pytest.approx(tuple(f["ci95"]), abs=1e-3)
    assert "tell vs sft: better in 1 of 1 cells, worse in 0" in md
    assert "Intervals: 95% bootstrap over seeds and items, crossed" in md
    assert md.count("15 cells in results.jsonl, 15 finished with results (methods: base, sft, sft-matched, tell, "
                    "tell-no-anchor)") == 1
    assert "does not know the commit" in md


def test_two_seeds_give_numbers_but_no_verdict(tmp_path):
    folder = write_sweep(tmp_path / "sw", ones_zeros(range(2)))
    md, fj = report(folder)
    (f,) = [f for f in fj if f["comparison"] == "tell vs sft"]
    assert f["diff"] == pytest.approx(1.0) and f["verdict"].startswith("no verdict")
    assert "better in 0 of 1 cells" in md and "no verdict in 1" in md
    assert "fewer than 3 seeds: no verdict" in section(md, "### tsk: accuracy")


def test_unstable_row_is_listed_and_moves_nothing(tmp_path):
    cells = ones_zeros(range(3))
    cells.append(cell("tell", 1000, 1.0, 3, 0.0, health="unstable", reason="loss on its own data rose 3x"))
    cells.append(cell("sft", 1000, 0, 3, 1.0, health="failed", reason="diverged (NaN loss)"))
    folder = write_sweep(tmp_path / "sw", cells)
    crashed = {"method": "sft-matched", "task_tokens": 0, "general_tokens": 0, "ratio": 1.0, "seed": 0, "lr": 1e-4,
               "selected": True, "health": "failed", "health_reason": "RuntimeError: out of memory", "set": None,
               "role": None, "metric": None, "value": None, "ci_low": None, "ci_high": None, "cell": "sm-0",
               "task_tokens_requested": 1000, "run_dir": "cells/sm-0"}  # a failed cell as the sweep writes it
    with open(folder / "results.jsonl", "a") as f:
        f.write(json.dumps(crashed) + "\n")
    md, fj = report(folder)
    health = section(md, "## Run health")
    assert "3 cell(s) unstable or failed" in health and "RuntimeError: out of memory" in health
    assert "loss on its own data rose 3x" in health and "diverged (NaN loss)" in health
    assert "3 unstable or failed cell(s) left out" in md and "12 cells in results.jsonl, 11 finished" in md
    assert "sft-matched" not in section(md, "## Findings")
    pts = md_table(section(md, "### tsk: accuracy"), "method")
    tell = next(r for r in pts if r[0] == "tell")
    assert tell[4] == "3" and float(tell[5]) == 1.0  # the unstable seed 3 (all wrong) is not in the point
    (f,) = [f for f in fj if f["comparison"] == "tell vs sft"]
    assert f["seeds_used"] == [0, 1, 2] and f["diff"] == pytest.approx(1.0)
    assert aggregate(load_results(folder), "tsk", "accuracy")[("tell", 1000, 1.0)]["value"] == 1.0


def test_old_results_file_loads_and_says_what_it_cannot_do(tmp_path):
    folder = write_sweep(tmp_path / "sw", ones_zeros(range(3)), old=True)
    assert "health" not in load_results(folder)[0]
    md, fj = report(folder)
    assert "seed min/max of per-seed item intervals (no item scores: not a confidence interval)" in md
    assert "no item_scores.jsonl" in md and "no lr_selection.json" in md and "no health column" in md
    (f,) = [f for f in fj if f["comparison"] == "tell vs sft"]
    assert f["diff"] == pytest.approx(1.0) and f["ci95"] == [None, None]
    assert all(f["verdict"].startswith("no verdict") for f in fj)
    assert not re.search(r"\| (better|worse|no detectable difference) \|", md)
    assert (folder / "report.html").is_file() and (folder / "token_efficiency.json").is_file()


def test_fit_refused_with_four_ratios_and_done_with_seven_from_a_logistic(tmp_path):
    md4, _ = report(write_sweep(tmp_path / "four", scaling_cells([0.3, 1, 3, 10])))
    fits4 = section(md4, "### tsk: scaling with general tokens")
    assert "No fit: 4 distinct ratios (general tokens > 0); an S-curve needs at least 6" in fits4
    assert "(chosen)" not in fits4 and "chosen fit" not in fits4

    ratios = [0.1, 0.3, 1, 3, 10, 30, 100]
    folder = write_sweep(tmp_path / "seven", scaling_cells(ratios))
    md7, _ = report(folder)
    fits7 = section(md7, "### tsk: scaling with general tokens")
    assert "Shape: **S-curve**" in fits7 and "logistic (chosen)" in fits7
    models = {r[0] for r in md_table(fits7, "model")}
    assert models == {"constant", "line", "logistic (chosen)"}
    mid = float(re.search(r"Midpoint: ([\d,]+) general tokens", fits7).group(1).replace(",", ""))
    assert math.log10(mid) == pytest.approx(3.5, abs=0.15)
    assert len(md_table(fits7, "ratio")) == 7 and "seeds common to every point: [0, 1, 2] (n=3)" in fits7
    assert (folder / "report_files" / "general_scaling_tsk_accuracy_1000.png").is_file()


def test_fit_uses_only_the_seeds_common_to_every_point_and_says_so(tmp_path):
    cells = scaling_cells([0.1, 0.3, 1, 3, 10, 30, 100]) + [cell("tell", 1000, 100, 3, 0.0)]
    md, _ = report(write_sweep(tmp_path / "sw", cells))
    assert "restricted from [0, 1, 2, 3] so that every point has the same seeds" in md


def test_forgetting_shows_a_negative_change_where_general_items_drop(tmp_path):
    ok = np.r_[np.ones(30), np.zeros(10)]
    cells = [cell("base", None, None, s, 0.0, ok) for s in range(3)]
    cells += [cell("sft", 1000, 0, s, 0.5, np.zeros(N)) for s in range(3)]   # forgets everything
    cells += [cell("tell", 1000, 1.0, s, 0.9, ok) for s in range(3)]         # keeps it
    md, fj = report(write_sweep(tmp_path / "sw", cells))
    rows = {r[1]: r for r in md_table(section(md, "### gen"), "metric")}
    assert float(rows["sft"][7]) == pytest.approx(-0.75) and rows["sft"][9] == "worse"
    assert float(rows["tell"][7]) == 0 and rows["tell"][9] == "no detectable difference"
    forget = {f["comparison"]: f for f in fj if f["section"] == "forgetting"}
    assert forget["sft vs base"]["ci95"][1] < 0 and forget["sft vs base"]["seeds_used"] == [0, 1, 2]
    assert (tmp_path / "sw" / "report_files" / "forgetting_gen_accuracy_1000.png").is_file()


def test_forgetting_pairs_on_the_seeds_base_shares_with_the_cell(tmp_path):
    ok = np.ones(N)
    cells = [cell("base", None, None, s, 0.0, ok) for s in range(4)]
    cells += [cell("sft", 1000, 0, s, 0.5, np.zeros(N)) for s in (1, 2, 3, 9)]
    _, fj = report(write_sweep(tmp_path / "sw", cells))
    (f,) = [f for f in fj if f["comparison"] == "sft vs base"]
    assert f["seeds_used"] == [1, 2, 3] and f["diff"] == pytest.approx(-1.0)


def test_token_efficiency_refused_with_three_budgets_and_read_at_the_declared_ratio_with_four(tmp_path):
    md3, _ = report(write_sweep(tmp_path / "three", efficiency_cells([100, 300, 1000])))
    assert "3 distinct SFT budgets; token-efficiency needs at least 4" in section(md3, "## Token-efficiency")

    folder = write_sweep(tmp_path / "four", efficiency_cells([100, 300, 1000, 3000]), spec={"efficiency_ratio": 1})
    md4, _ = report(folder)
    eff = json.loads((folder / "token_efficiency.json").read_text())
    assert [e["general_ratio"] for e in eff] == [1.0] and eff[0]["declared_ratio"]
    e = eff[0]
    # 0.5 lies halfway between SFT's 0.4 (300 tokens) and 0.6 (1000) in log tokens: sqrt(300 * 1000).
    assert e["computed"] and e["bound"] is None
    assert e["sft_equivalent_tokens"] == pytest.approx(math.sqrt(300 * 1000), rel=1e-6)
    assert e["efficiency"] == pytest.approx(math.sqrt(300 * 1000) / 100, rel=1e-6)
    assert e["ci95"][0] is not None and e["ci95"][0] <= e["efficiency"] <= e["ci95"][1]
    text = section(md4, "## Token-efficiency")
    assert "declared in the spec" in text and len(md_table(text, "tell task tokens")) == 1


def test_token_efficiency_without_a_declared_ratio_shows_every_ratio_and_says_none_was_chosen(tmp_path):
    folder = write_sweep(tmp_path / "sw", efficiency_cells([100, 300, 1000, 3000]), spec={"efficiency_ratio": "all"})
    md, _ = report(folder)
    eff = json.loads((folder / "token_efficiency.json").read_text())
    assert sorted(e["general_ratio"] for e in eff) == [1.0, 3.0] and not any(e["declared_ratio"] for e in eff)
    assert "none was chosen" in section(md, "## Token-efficiency")


def test_lr_table_lists_every_candidate_and_unkept_candidates_move_no_point(tmp_path):
    cells = ones_zeros(range(3))
    cells += [cell("tell", 1000, 1.0, s, 0.0, selected=False, lr=1e-3) for s in range(3)]
    lr = {"rule": "highest validation task score among lrs with no unstable seed",
          "groups": [{"method": "tell", "task_tokens_requested": 1000, "ratio": 1.0, "chosen_lr": 1e-4,
                      "reason": "best validation task score",
                      "candidates": [{"lr": 1e-4, "seeds": [0, 1, 2], "unstable_seeds": [], "val_task": 0.91,
                                      "val_general_loss": 2.1},
                                     {"lr": 1e-3, "seeds": [0, 1, 2], "unstable_seeds": [1], "val_task": 0.42,
                                      "val_general_loss": 3.3},
                                     {"lr": 3e-5, "seeds": [0, 1, 2], "unstable_seeds": [], "val_task": 0.7,
                                      "val_general_loss": None}]}]}
    md, fj = report(write_sweep(tmp_path / "sw", cells, lr=lr))
    text = section(md, "## Learning-rate selection")
    assert "highest validation task score among lrs with no unstable seed" in text
    rows = md_table(text, "method")
    assert [r[3] for r in rows] == ["0.0001", "0.001", "3e-05"]
    assert [r[9] for r in rows] == ["**chosen**", "", ""] and rows[1][5] == "1" and rows[2][8] == "-"
    assert rows[0][10] == "best validation task score" and rows[0][5] == "0"
    assert "3 learning-rate candidate cell(s) not kept" in md
    tell = next(r for r in md_table(section(md, "### tsk: accuracy"), "method") if r[0] == "tell")
    assert float(tell[5]) == 1.0 and tell[4] == "3"
    assert next(f for f in fj if f["comparison"] == "tell vs sft")["a_value"] == 1.0


def test_files_plots_html_and_unknown_methods(tmp_path):
    cells = ones_zeros(range(3)) + [cell("mystery", 1000, 1.0, s, 0.5) for s in range(3)]
    cells += [cell("tell-no-anchor", 1000, 1.0, s, 0.5) for s in range(3)]
    folder = write_sweep(tmp_path / "sw", cells)
    (folder / "report_files").mkdir()
    (folder / "report_files" / "stale.png").write_bytes(b"old")
    md, _ = report(folder)
    pngs = sorted(p.name for p in (folder / "report_files").glob("*.png"))
    assert "stale.png" not in pngs and {"task_scaling_tsk_accuracy.png", "anchor_tsk_accuracy.png",
                                        "ablation_tsk_accuracy.png"} <= set(pngs)
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == md.count("](report_files/") == len(pngs)
    assert "<table>" in page and "mystery" in md
    assert "vs task tokens" in md and "Token-efficiency" in md and "ablation" in md and "anchor" in md


def test_a_report_rerun_that_fails_keeps_the_last_report_and_its_plots_whole(tmp_path, monkeypatch):
    """The report and its plots are drawn in a staging folder and moved in together: a rerun that fails (here the
    disk fills while report.html is written) leaves the earlier report.md, findings.json and report_files/ as they
    were, not an emptied plot folder beside an old page."""
    import errno

    from tell.errors import TellError
    from tell.experiments import report as report_module

    folder = write_sweep(tmp_path / "sw", ones_zeros(range(3)))
    report(folder)
    before = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
              if p.is_file() and p.name != "results.jsonl"}
    assert any(k.startswith("report_files/") for k in before) and "report.html" in before

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "report.html"))

    monkeypatch.setattr(report_module, "_html", full)
    with pytest.raises(TellError, match="No space left"):
        make_report(folder, title="a new title")
    after = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
             if p.is_file() and p.name != "results.jsonl"}
    assert after == before and not list(folder.glob(".staged*"))


def test_the_html_page_is_the_markdown_rendered_with_tables_and_names_escaped(tmp_path):
    """report.html comes from markdown-it-py (CommonMark + tables), not a line-by-line converter: headings, tables
    with a header row, code spans; a method named like an HTML tag is shown as text, never run as one."""
    evil = "<script>alert(1)</script>"
    folder = write_sweep(tmp_path / "sw", ones_zeros(range(3)) + [cell(evil, 1000, 1.0, s, 0.5) for s in range(3)])
    md, _ = report(folder)
    page = (folder / "report.html").read_text()
    assert "## Run health" in md and "<h2>Run health</h2>" in page and "<h3>tsk: accuracy</h3>" in page
    assert md.count("\n|---|") == page.count("<table>") > 0 and "<thead>" in page and "<th>method</th>" in page
    assert "`tell.experiments.stats`" in md and "<code>tell.experiments.stats</code>" in page and "`" not in page
    assert "\\<script>alert(1)\\</script>" in md and "<script>" not in page  # escaped (tell.mdtext), shown as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("data:image/png;base64,") == md.count("](report_files/") > 0


def test_a_metric_without_item_scores_is_labelled_and_gets_no_verdict_beside_one_with_them(tmp_path):
    folder = write_sweep(tmp_path / "sw", ones_zeros(range(3)))
    rows = load_results(folder)
    corpus = [{**r, "metric": "bleu"} for r in rows]  # a corpus-level metric: no per-item scores
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + corpus))
    md, fj = report(folder)
    verdicts = {f["metric"]: f["verdict"] for f in fj if f["comparison"] == "tell vs sft"}
    assert verdicts == {"accuracy": "better", "bleu": "no verdict (no item scores: no paired interval)"}
    assert "crossed (tell.experiments.stats.Resampler) where item scores exist; else the seed min/max" in md
    bleu = md_table(section(md, "### tsk: bleu"), "method")
    assert {r[7] for r in bleu} == {"seed min/max (not a CI)"}


def test_a_torn_results_file_is_refused_by_file_and_line(tmp_path, capsys):
    from tell.cli import main

    folder = write_sweep(tmp_path / "sw", [cell("tell", 100, 1.0, s, 0.5) for s in (1, 2, 3)])
    with open(folder / "results.jsonl", "a") as f:
        f.write('{"method": "tell", "task_tok')
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    n = len((folder / "results.jsonl").read_text().splitlines())
    assert err.count("\n") == 1 and f"results.jsonl:{n}: not a JSON row" in err
    assert not (folder / "report.md").exists()


def test_a_label_accuracy_is_read_beside_the_majority_class_rate(tmp_path):
    """(issue 38 item 2) the points and each finding on a label accuracy say whether an arm beats answering the
    majority label to every item; here tell (0.9) does and sft (0.6, under 0.7) does not."""
    folder = write_sweep(tmp_path / "sw", ones_zeros(range(3), tell=(np.arange(N) < 36).astype(float),
                                                      sft=(np.arange(N) < 24).astype(float)))
    for name in ("results.jsonl", "item_scores.jsonl"):
        rows = [json.loads(x) | {"metric": "label_accuracy_all"} for x in (folder / name).read_text().splitlines()]
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    pred = folder / "cells" / "any" / "eval" / "predictions.jsonl"
    pred.parent.mkdir(parents=True)
    pred.write_text("".join(json.dumps({"set": "tsk", "scores": {"gold": "no" if i < 28 else "yes"}}) + "\n"
                            for i in range(N)))
    md, fj = report(folder)
    assert "Majority-class rate of these 40 items: 0.7 (answering 'no' to every item)" in md
    (f,) = [f for f in fj if f["comparison"] == "tell vs sft"]
    assert f["majority"]["rate"] == pytest.approx(0.7) and f["a_beats_majority"] and not f["b_beats_majority"]
    assert "majority-class rate 0.7; tell beats it, sft does not beat it." in md


def test_a_duplicated_row_is_refused_and_a_nan_value_is_reported_not_averaged(tmp_path, capsys):
    """(issue 40, round 3 item 8) never averaged in: a row twice stops the report by its line; a NaN value (a
    precision with nothing predicted) is left out of the point and named in the report's notes."""
    from tell.cli import main

    folder = write_sweep(tmp_path / "sw", ones_zeros(range(3)), items=False)  # points from the rows' values
    lines = (folder / "results.jsonl").read_text().splitlines()
    (folder / "results.jsonl").write_text("\n".join(lines + [lines[4]]) + "\n")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"results.jsonl:{len(lines) + 1}:" in err[0] and "as row 5" in err[0]
    rows = [json.loads(x) for x in lines]
    rows[-1]["value"] = float("nan")  # tell, seed 2
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md, fj = report(folder)
    assert "tsk: accuracy (1)" in md and "not a finite number" in md
    (tell,) = [r for r in md_table(section(md, "### tsk: accuracy"), "method") if r[0] == "tell"]
    assert tell[4] == "2" and tell[5] == "1"  # two seeds left, both 1.0: the NaN is in no mean


def test_the_ablation_reads_each_budgets_own_point_when_the_general_amount_is_fixed(tmp_path):
    """(issue 37 item 2) tell at 75, 150 and 300 task tokens with one general amount has ratios 660, 330 and 165:
    the ablation row is the budget where the paired methods ran (150, ratio 330), not the largest ratio of any
    budget (660, where nothing is paired)."""
    share = lambda p: (np.arange(N) < round(p * N)).astype(float)  # noqa: E731
    cells = []
    for s in range(3):
        cells += [cell("base", None, None, s, share(0.0)), cell("sft", 150, 0, s, share(0.1)),
                  cell("tell", 75, 660.0, s, share(0.3)), cell("tell", 150, 330.0, s, share(0.6)),
                  cell("tell", 300, 165.0, s, share(0.8)), cell("sft-matched", 150, 330.0, s, share(0.2)),
                  cell("general-only", 150, 330.0, s, share(0.0))]
    md, _ = report(write_sweep(tmp_path / "sw", cells, spec={"seeds": [0, 1, 2], "general_tokens": [49500]}))
    part = md[md.index("Ablation ("):]
    rows = md_table(part, "task tokens")
    assert [(r[0], r[1]) for r in rows] == [("150", "330")], rows
