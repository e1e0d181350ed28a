"""`tell sweep --executor local|ray|slurm`, per-cell claims (two drivers on one folder), the token-count cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tell.cli import main

from conftest import write_jsonl


@pytest.fixture
def small_spec(tmp_path, tiny_model, toy_mixture):
    d = toy_mixture.parent
    ev = write_jsonl(tmp_path / "eval.jsonl", [
        {"prompt": f"judge castle {w}", "response": "json yes thought no", "source": "task", "origin": "e", "row": i,
         "meta": {"kind": "cloze", "role": "task", "answer": "json yes thought no"}} for i, w in enumerate(["river", "ocean"])])
    y = tmp_path / "spec.yaml"
    y.write_text(json.dumps({
        "name": "tiny", "model": str(tiny_model), "task": str(d / "task.jsonl"), "general": [str(d / "general.jsonl")],
        "anchor": "task", "eval": [str(ev)], "task_tokens": [120], "ratios": [1, 3], "seeds": [7],
        "methods": ["base", "sft", "tell"], "train": {"learning_rate": 0.01, "micro_batch_size": 4},
        "decoding": {"greedy": True, "max_new_tokens": 4, "bootstrap": 50}}))
    return y


def _values(out: Path) -> dict:
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    return {(r["method"], r["ratio"], r["seed"], r["metric"]): r["value"] for r in rows}


def _attempts(out: Path) -> dict:
    return {p.name: len((p / "attempts.jsonl").read_text().splitlines()) for p in (out / "cells").iterdir()
            if (p / "attempts.jsonl").exists()}


def test_ray_executor_gives_the_local_results_and_resumes_after_a_killed_driver(small_spec, tmp_path):
    """One Ray driver killed mid-sweep, the next one finishing it (two Ray starts, not three: the second driver's
    results are the ones compared with the local executor's)."""
    local = tmp_path / "local"
    assert main(["sweep", str(small_spec), "--out", str(local)]) == 0
    assert len(_values(local)) == 4  # base, sft, tell r1, tell r3

    # Kill a driver mid-sweep: the cells it finished are not run again by the next driver.
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "tell.cli", "sweep", str(small_spec), "--out", str(killed),
                          "--executor", "ray"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in p.stdout:
        if ": done (" in line:  # the first finished cell
            p.kill()
            break
    p.wait()
    # A SIGKILLed driver leaves its local Ray's processes behind, as it would for a user, and they may still start a
    # cell after the kill: a user ends them with `ray stop`, and so does the test, before it counts what was started
    # (counted earlier, a cell a leftover worker began a moment later read as run twice: a flaky test).
    subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=120)
    done_before = {c.name for c in (killed / "cells").iterdir()
                   if json.loads((c / "status.json").read_text() if (c / "status.json").exists() else '{"status": 0}')["status"] == "done"}
    assert done_before
    cut_short = set(_attempts(killed)) - done_before  # started by the killed driver: tried again, once
    assert main(["sweep", str(small_spec), "--out", str(killed), "--executor", "ray", "--cpus-per-cell", "1"]) == 0
    assert _values(killed) == _values(local)
    attempts = _attempts(killed)
    assert all(attempts[c] == 1 for c in done_before)  # finished cells were not re-run
    assert all(n == 1 for c, n in attempts.items() if c not in done_before and c not in cut_short), attempts
    subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=120)  # the second driver's, if any


def test_slurm_executor_through_submitit_local_driver_exits_and_a_second_call_collects(small_spec, tmp_path, capsys):
    y = json.loads(small_spec.read_text()) | {"executor": {"name": "slurm", "slurm": {"cluster": "local", "time_min": 10}}}
    small_spec.write_text(json.dumps(y))
    out = tmp_path / "sl"
    assert main(["sweep", str(small_spec), "--out", str(out), "--no-wait"]) == 0
    assert "run the same `tell sweep` again to collect" in capsys.readouterr().out
    assert (out / "slurm" / "jobs.pkl").is_file() and not (out / "results.jsonl").exists()
    # A second driver attaches to the jobs still running, resubmits nothing, and collects.
    assert main(["sweep", str(small_spec), "--out", str(out)]) == 0
    assert len(_values(out)) == 4 and set(_attempts(out).values()) == {1}


def test_two_drivers_at_once_run_every_cell_once(small_spec, tmp_path):
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "tell.cli", "sweep", str(small_spec), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    b = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    outs = [p.communicate(timeout=600)[0] for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    attempts = _attempts(out)
    assert len(attempts) == 4 and set(attempts.values()) == {1}, attempts  # every cell ran exactly once
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len({r["cell"] for r in rows}) == 4 and len(rows) == len({(r["cell"], r["metric"]) for r in rows})
    assert not list(out.glob("cells/*/claim.json"))  # every claim released


def test_a_stale_claim_is_taken_over_and_a_live_one_is_not(tmp_path):
    from tell.experiments.claims import Claim

    a, b = Claim(tmp_path, stale_after=0.5, beat=60), Claim(tmp_path, stale_after=0.5, beat=60)
    assert a.acquire() and not b.acquire()
    time.sleep(0.7)  # a's heartbeat (every 60 s) has not come: its claim is stale
    assert b.acquire() and b.holder()["owner"] == b.owner
    a.release()  # a no longer owns it: releasing must not remove b's claim
    assert (tmp_path / Claim.FILE).exists()
    b.release()
    assert not (tmp_path / Claim.FILE).exists()

    # An owner on this machine whose process is gone: stale at once, without waiting out the timeout.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / Claim.FILE).write_text(json.dumps({"owner": f"{__import__('socket').gethostname()}:{dead.pid}:x"}))
    c = Claim(tmp_path, stale_after=3600)
    assert c.stale() and c.acquire()
    c.release()
    (tmp_path / Claim.FILE).write_text(json.dumps({"owner": f"{__import__('socket').gethostname()}:{os.getpid()}:x"}))
    assert not Claim(tmp_path, stale_after=3600).stale()  # a live owner's claim is not taken


def test_token_count_cache_gives_byte_identical_mixtures_and_counts_each_text_once(data_files, spm_model, tmp_path):
    from tell.data.tokens import CachedCounter, load_counter
    from tell.prepare import PrepareConfig, prepare

    base = dict(task=str(data_files["task"]), general=[str(data_files["general1"]), str(data_files["general2"])],
                tokenizer=str(spm_model), task_tokens=200, anchor="judge", progress=False, seed=3)
    for ratio in (2.0, 5.0):
        prepare(PrepareConfig(**base, ratio=ratio, out=str(tmp_path / f"plain{ratio}")))
        prepare(PrepareConfig(**base, ratio=ratio, out=str(tmp_path / f"cached{ratio}"), token_cache=str(tmp_path / "tc")))
        assert (tmp_path / f"plain{ratio}" / "mixture.jsonl").read_bytes() == \
               (tmp_path / f"cached{ratio}" / "mixture.jsonl").read_bytes()
    counter = CachedCounter(load_counter(str(spm_model)), tmp_path / "tc")
    texts = ["the river and the ocean", "a new text never counted"]
    counter.count(texts)
    assert counter.hits == 0 and counter.misses == 2
    again = CachedCounter(load_counter(str(spm_model)), tmp_path / "tc")  # another process: reads every shard
    assert again.count(texts) == load_counter(str(spm_model)).count(texts) and again.misses == 0
    # A shard torn by a killed writer: its partial record is ignored, the rest is read.
    shard = next((tmp_path / "tc").rglob("*.bin"))
    shard.write_bytes(shard.read_bytes() + b"\x01\x02\x03")
    assert CachedCounter(load_counter(str(spm_model)), tmp_path / "tc").count(texts) == again.count(texts)


def test_cells_run_quietly_without_library_deprecations_or_per_cell_few_step_notices(monkeypatch):
    """Issue 23 item 5: a sweep's console holds its own lines; transformers' / peft's FutureWarnings and the
    per-run "too few optimizer steps" notice (said once by the report's Run health) are off where cells run, and
    a warning of any other module still shows."""
    import warnings

    from tell.experiments.executors import quiet_libraries
    from tell.train import run as train_run

    monkeypatch.setitem(train_run.FEW_STEPS_NOTICE, "on", True)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_libraries()
        for module in ("transformers.modeling_utils", "peft.tuners.lora", "tell.prepare"):
            warnings.warn_explicit(f"{module}: this is deprecated", FutureWarning, "x.py", 1, module=module)
    assert [str(w.message) for w in seen] == ["tell.prepare: this is deprecated"]
    assert train_run.FEW_STEPS_NOTICE["on"] is False
