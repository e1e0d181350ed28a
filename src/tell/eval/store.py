"""The predictions of an eval folder: appended a whole batch at a time (fsynced), so a killed eval resumes
with every saved item kept and none written twice; a torn last line from a killed process is dropped.

Each row carries `made_by`: what produced it (adapter and data file checksums, the item's content hash, the
decoding settings and the anchor). A saved row counts as done only when its `made_by` equals the one the
item would get now, so a replaced adapter or a reordered or edited eval file gets its rows redone, never
reused. `finish` leaves in the file exactly the rows the metrics were computed from."""

from __future__ import annotations

import json
from pathlib import Path

from tell.io import append, atomic_open


class PredictionStore:
    def __init__(self, path: Path, before_change=None):
        """`before_change`: called once, before the file's rows first change (eval drops its metrics.json then:
        metrics stand only beside the rows they were computed from, and a rerun that fails before changing a row
        keeps them)."""
        self.path = path
        self._rows: dict[tuple[str, str], dict] = {}
        self._used: set[tuple[str, str]] = set()
        self._before_change = before_change
        self.unreadable = 0  # saved rows that were not predictions tell writes (edited): their items are redone
        self._lines = 0      # rows in the file now (a redone item's old row stays in it until `finish`)

    def _changing(self) -> None:
        if self._before_change is not None:
            self._before_change()
            self._before_change = None

    def resume(self) -> None:
        """Read the saved predictions and rewrite the file without a torn tail or unreadable rows, so appends
        start clean."""
        self._rows, self.unreadable = {}, 0
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                self.unreadable += len(lines) - n - (n == len(lines) - 1)  # a torn last line: a killed run
                break  # everything after it is redone
            if not (isinstance(row, dict) and isinstance(row.get("set"), str) and isinstance(row.get("id"), str)):
                self.unreadable += 1
                continue
            self._rows[(row["set"], row["id"])] = row  # a row redone after a stale one comes later in the file
        self._lines = len(lines)
        if len(self._rows) < len(lines):
            self._rewrite(self._rows)

    def _rewrite(self, rows: dict) -> None:
        self._changing()
        self._rows = rows
        with atomic_open(self.path) as f:
            for r in rows.values():
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        self._lines = len(rows)

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
        self._changing()
        append(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new), sync=True)
        self._lines += len(new)
        for r in new:
            self._rows[(r["set"], r["id"])] = r

    def rows(self, set_name: str, ids: list[str]) -> list[dict]:
        """The saved rows of these items (the ones the metrics are computed from)."""
        self._used.update((set_name, i) for i in ids)
        return [self._rows[(set_name, i)] for i in ids]

    def finish(self) -> None:
        """Rewrite the file with exactly the rows handed out by `rows`, in the order they were saved: rows replaced
        since they were saved, and items no longer asked for, go."""
        kept = {k: r for k, r in self._rows.items() if k in self._used}
        if len(kept) != self._lines or not self.path.is_file():  # else: already the rows the metrics come from
            self._rewrite(kept)
