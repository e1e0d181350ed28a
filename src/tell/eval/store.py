"""The predictions of an eval folder: appended a whole batch at a time (fsynced), so a killed eval resumes
with every saved item kept and none written twice; a torn last line from a killed process is dropped."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tell.io import atomic_open


class PredictionStore:
    def __init__(self, path: Path):
        self.path = path
        self._rows: dict[tuple[str, str], dict] = {}

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
            self._rows.setdefault((row["set"], row["id"]), row)
        with atomic_open(self.path) as f:
            for r in self._rows.values():
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    def has(self, set_name: str, item_id: str) -> bool:
        return (set_name, item_id) in self._rows

    def add(self, rows: list[dict]) -> None:
        """Append rows not saved yet (a batch half written before a crash keeps what was saved)."""
        new = [r for r in rows if (r["set"], r["id"]) not in self._rows]
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
        return [self._rows[(set_name, i)] for i in ids]
