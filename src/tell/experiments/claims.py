"""Per-cell claims, so that several drivers (two `tell sweep` runs, Slurm jobs, Ray tasks) on one out folder
never run the same cell twice. The out folder may be on NFS, so only operations that are atomic there are
used: creating a file with O_EXCL, renaming a file, and reading a file's mtime.

A claim is `cells/<key>/claim.json` (its owner), kept fresh by a heartbeat thread that touches it every
`beat` seconds while the cell runs. A claim older than `stale_after` seconds belongs to a dead owner and is
taken over: renamed away (only one of several racing drivers can rename the same file), then re-created.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

STALE_AFTER = 600.0  # seconds without a heartbeat: the owner is dead (a cell's heartbeat is every 30 s)
BEAT = 30.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Claim:
    FILE = "claim.json"

    def __init__(self, folder: Path, *, stale_after: float = STALE_AFTER, beat: float = BEAT):
        self.path = Path(folder) / self.FILE
        self.stale_after, self.beat = stale_after, beat
        self.owner = owner_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text()) | {"age_s": round(time.time() - self.path.stat().st_mtime, 1)}
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def stale(self) -> bool:
        """No heartbeat for `stale_after` seconds, or an owner on this machine whose process is gone (a
        killed driver's claim need not wait out the timeout where its death can be seen)."""
        try:
            if time.time() - self.path.stat().st_mtime > self.stale_after:
                return True
        except FileNotFoundError:
            return False
        host, _, rest = ((self.holder() or {}).get("owner") or "").partition(":")
        pid = rest.partition(":")[0]
        return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))

    def acquire(self) -> bool:
        """True when this process now holds the claim; False when a live owner holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self.stale():
                    return False
                try:  # a dead owner's claim: move it aside; of racing drivers only one rename succeeds
                    os.rename(self.path, self.path.with_name(f"claim.stale-{uuid.uuid4().hex[:8]}.json"))
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"owner": self.owner, "since": time.time()}, f)
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()
            return True
        return False

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.beat):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        h = self.holder()
        if h and h.get("owner") == self.owner:
            self.path.unlink(missing_ok=True)
