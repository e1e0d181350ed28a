"""The predictions of an eval folder: appended a whole batch at a time (fsynced), so a killed eval resumes
with every saved item kept and none written twice; a torn last line from a killed process is dropped.

Each row carries `made_by`: what produced it (adapter and data file checksums, the item's content hash, the
decoding settings and the anchor). A saved row counts as done only when its `made_by` equals the one the
item would get now, so a replaced adapter or a reordered or edited eval file gets its rows redone, never
reused. `finish` leaves in the file exactly the rows the metrics were computed from."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tell.io import atomic_open


class PredictionStore:
    def __init__(self, path: Path):
        self.path = path
        self._rows: dict[tuple[str, str], dict] = {}
        self._used: set[tuple[str, str]] = set()

    def resume(self) -> None:
        """Read the saved predictions and rewrite the file without a torn tail, so appends start clean."""
        self._rows = {}
        if not self.path.is_file():
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line from a killed run: everything after it is redone
            self._rows[(row["set"], row["id"])] = row  # a row redone after a stale one comes later in the file
        with atomic_open(self.path) as f:
            for r in self._rows.values():
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    def has(self, set_name: str, item_id: str, made_by: dict) -> bool:
        """A row for the item is saved, and it was made by what would make it now."""
        row = self._rows.get((set_name, item_id))
        return row is not None and row.get("made_by") == made_by

    def add(self, rows: list[dict]) -> None:
        """Append rows not saved yet, or saved from something else (a batch half written before a crash keeps
        what was saved)."""
        new = [r for r in rows if not self.has(r["set"], r["id"], r["made_by"])]
        if not new:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            for r in new:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for r in new:
            self._rows[(r["set"], r["id"])] = r

    def rows(self, set_name: str, ids: list[str]) -> list[dict]:
        """The saved rows of these items (the ones the metrics are computed from)."""
        self._used.update((set_name, i) for i in ids)
        return [self._rows[(set_name, i)] for i in ids]

    def finish(self) -> None:
        """Rewrite the file with exactly the rows handed out by `rows`, in the order they were saved: rows replaced
        since they were saved, and items no longer asked for, go."""
        self._rows = {k: r for k, r in self._rows.items() if k in self._used}
        with atomic_open(self.path) as f:
            for r in self._rows.values():
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
