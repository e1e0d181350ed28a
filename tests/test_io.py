"""`tell.io`: temp files of killed writers are removed by the next successful write."""

from __future__ import annotations

import os
import subprocess
import sys

from tell.train.run import train

from conftest import small_train_config


def test_temp_files_of_killed_writers_are_removed_by_the_next_successful_write(toy_mixture, tiny_model, tmp_path):
    from tell.io import _HOST, write_json

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    folder = tmp_path / "f"
    folder.mkdir()
    stale = [folder / f".a.json.{dead.pid}@{_HOST}.x1.tmp", folder / ".a.json.abc123.tmp"]
    alive = [folder / f".a.json.{os.getppid()}@{_HOST}.x2.tmp", folder / f".a.json.{dead.pid}@elsewhere.x3.tmp"]
    for p in stale + alive:
        p.write_text("half")
    write_json(folder / "a.json", {})
    assert sorted(p.name for p in folder.iterdir()) == sorted(["a.json"] + [p.name for p in alive])
    # A killed run's leftovers in its folder go once the rerun succeeds.
    run = tmp_path / "run"
    train(small_train_config(toy_mixture, tiny_model, run, save_steps=2, max_steps=3))
    (run / "metrics.json").unlink()
    (run / f".train_log.jsonl.{dead.pid}@{_HOST}.y.tmp").write_text("half")
    (run / f".metrics.json.{dead.pid}@{_HOST}.z.tmp").write_text("half")
    (run / "adapter.tmp").mkdir()
    train(small_train_config(toy_mixture, tiny_model, run, save_steps=2, max_steps=3, resume=True))
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
