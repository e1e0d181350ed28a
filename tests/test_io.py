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


def test_a_staged_output_moves_in_whole_or_not_at_all(tmp_path):
    """`staged_output`: a block that fails leaves the folder as it was (old files whole, no new one beside them,
    a folder made for it removed); one that ends moves the set in, drops the earlier result's files it did not
    write again, and keeps files of the folder that no `replaces` glob names (the user's)."""
    import pytest

    from tell.io import staged_output

    dest = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output(dest / "deeper") as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("cut short")
    assert not dest.exists()  # both folders made for the result are gone
    dest.mkdir()
    for name, text in [("a.png", "old"), ("b.png", "old"), ("r.json", "old"), ("mine.txt", "user")]:
        (dest / name).write_text(text)
    with pytest.raises(RuntimeError):
        with staged_output(dest, replaces=("*.png", "r.json")) as tmp:
            (tmp / "a.png").write_text("new")
            (tmp / "c.png").write_text("new")
            raise RuntimeError("cut short")
    assert {p.name: p.read_text() for p in dest.iterdir()} == {"a.png": "old", "b.png": "old", "r.json": "old",
                                                              "mine.txt": "user"}
    with staged_output(dest, replaces=("*.png", "r.json"), last=("r.json",)) as tmp:
        (tmp / "a.png").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "c.png").write_text("new")
        (tmp / "r.json").write_text("new")
    assert {str(p.relative_to(dest)): p.read_text() for p in dest.rglob("*") if p.is_file()} == {
        "a.png": "new", "sub/c.png": "new", "r.json": "new", "mine.txt": "user"}
    assert not list(dest.glob(".staged.*"))


def test_an_append_refused_for_space_names_its_file(tmp_path):
    """A log line or cache entry appended on a full disk: write() raises without a file name, so the error names
    the file it was appending to (here /dev/full, which refuses every write with ENOSPC)."""
    import pytest

    from tell.errors import TellError
    from tell.io import append

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    for data in ("one line\n", b"\x00" * 20):
        with pytest.raises(TellError, match="No space left on device") as e:
            append("/dev/full", data, sync=True)
        assert e.value.file == "/dev/full"
    append(tmp_path / "log.jsonl", "a\n")
    append(tmp_path / "log.jsonl", "b\n", sync=True)
    assert (tmp_path / "log.jsonl").read_text() == "a\nb\n"


def test_a_staged_output_refused_for_space_names_the_result_file_and_a_file_as_dest_is_one_line(tmp_path):
    """A write refused inside the block names the file of `dest` it was for, not the temp folder (gone by then);
    a `dest` that is a file, or lies under one, is a TellError, not a traceback."""
    import errno

    import pytest

    from tell.errors import TellError
    from tell.io import staged_output

    dest = tmp_path / "out"
    with pytest.raises(TellError) as e:
        with staged_output(dest) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "report_files" / "a.png"))
    assert e.value.file == str(dest / "report_files" / "a.png") and ".staged" not in str(e.value)
    with pytest.raises(TellError) as e:
        with staged_output(dest) as tmp:
            with atomic_full(tmp / "report.html"):
                pass
    assert e.value.file == str(dest / "report.html") and not dest.exists()
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        with pytest.raises(TellError, match="is a file"):
            with staged_output(bad):
                pass


def atomic_full(path):
    """atomic_open whose write meets a full disk."""
    import contextlib
    import errno

    from tell.io import atomic_open

    @contextlib.contextmanager
    def cm():
        with atomic_open(path) as f:
            f.write("x")
            raise OSError(errno.ENOSPC, "No space left on device")
            yield f
    return cm()
