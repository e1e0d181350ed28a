"""The folders `tell` writes and reads, one small class each: the file names, the manifest, the anchor and
the records live here and nowhere else, so every command reads an artifact the same way.

    MixtureDir   `tell prepare` -> mixture.jsonl + manifest.json
    RunDir       `tell train`   -> config.json, mixture_manifest.json, train_log.jsonl, checkpoints/, adapter/,
                                   metrics.json (written last: its presence means the run finished)
    EvalDir      `tell eval`    -> eval_config.json, predictions.jsonl, metrics.json
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from tell.data.anchor import Anchor
from tell.data.records import Record, record_from_json
from tell.errors import TellError


TELL_JSON = "tell.json"  # what a `tell export` folder says about itself (anchor, template, training)
ADAPTER_SUMS = "tell_adapter.json"  # in an adapter folder `tell train` saved: its weight files' sizes and sha256


def _adapter_weights(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("adapter_model*") if p.is_file())


def mark_adapter(folder: Path) -> dict:
    """Record the size and sha256 of the adapter's weight files in `tell_adapter.json`, inside the folder (it
    travels with it: a copied or exported adapter stays checkable); returns {file: sha256}."""
    from tell.io import sha256_file, write_json

    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in _adapter_weights(folder)}
    write_json(Path(folder) / ADAPTER_SUMS, {"files": files})
    return {name: f["sha256"] for name, f in files.items()}


def verify_adapter(folder: Path) -> None:
    """Refuse an adapter whose weight files differ from what `tell train` recorded (bytes altered, cut short,
    missing). An adapter that records nothing (a PEFT adapter from elsewhere, or saved before tell recorded
    them) is taken as it is."""
    from tell.io import sha256_file

    sums = Path(folder) / ADAPTER_SUMS
    if not sums.is_file():
        return
    files = read_json(sums, "").get("files")
    if not isinstance(files, dict) or not files:
        raise TellError(f"{ADAPTER_SUMS} lists no weight files; the adapter folder is damaged", file=str(folder))
    for name, want in files.items():
        p = Path(folder) / name
        if not p.is_file():
            raise TellError(f"{name} is missing (listed in {ADAPTER_SUMS}); the adapter folder is damaged",
                            file=str(folder))
        got = sha256_file(p)
        if got != want.get("sha256"):
            raise TellError(f"{name} changed since `tell train` saved it (sha256 {got[:12]}, recorded "
                            f"{str(want.get('sha256'))[:12]} in {ADAPTER_SUMS}, {p.stat().st_size} bytes, recorded "
                            f"{want.get('bytes')}); the adapter is damaged or was edited: train it again or restore "
                            "it", file=str(folder))


def adapter_identity(folder: Path) -> str:
    """sha256 over every file of an adapter folder (weights, adapter_config.json, tokenizer files): what makes
    its outputs, so an eval's saved predictions are reused only for the same adapter in every respect."""
    from tell.io import sha256_file

    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and p.name != ADAPTER_SUMS:
            h.update(f"{p.relative_to(folder).as_posix()}\0{sha256_file(p)}\0".encode())
    return h.hexdigest()


def read_json(path: Path, what: str, fix: str = "delete the folder and redo it") -> dict:
    """A JSON file an artifact folder must hold, or one clear error (which ends with `fix`)."""
    if not path.is_file():
        raise TellError(f"no {path.name}; expected {what}", file=str(path.parent))
    from tell.io import duplicate_key

    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TellError(f"not valid JSON ({e}); the file is damaged, {fix}",
                        file=str(path)) from None
    twice = duplicate_key(text)
    if twice is not None:  # json keeps the last silently: which one tell wrote is unknown
        raise TellError(f"key '{twice}' appears twice (tell writes each key once: the file was edited); expected "
                        f"{what}", file=str(path))
    return doc


def _digest(path: Path) -> tuple[str | None, int]:
    """(sha256, lines) of a file; (None, 0) when there is none."""
    digest, lines = hashlib.sha256(), 0
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
                lines += block.count(b"\n")
    except FileNotFoundError:
        return None, 0
    return digest.hexdigest(), lines


class MixtureDir:
    """A `tell prepare` output folder."""

    MIXTURE, MANIFEST = "mixture.jsonl", "manifest.json"
    # A new mixture waits here, whole, until its manifest is in place (`tell.prepare`): the manifest's replacing the
    # old one is the moment the folder changes from the old pair to the new one; `verify` then moves it in.
    NEXT = "mixture.jsonl.next"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.mixture_path = self.path / self.MIXTURE
        self.manifest_path = self.path / self.MANIFEST
        self.next_path = self.path / self.NEXT

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict:
        return read_json(self.manifest_path, "a folder written by `tell prepare`")

    def anchor(self) -> Anchor | None:
        return Anchor.from_json(self.manifest().get("anchor"))

    def verify(self) -> dict:
        """The manifest, once mixture.jsonl is checked against it (sha256 and line count). A mixture cut short,
        edited, or replaced without its manifest is refused: every command that reads a mixture calls this first.
        A manifest whose mixture still waits as mixture.jsonl.next (a prepare stopped between the two) has it
        moved in: the folder held the new pair from the moment that manifest was written."""
        manifest = self.manifest()
        want = manifest.get("mixture") or {}
        if isinstance(manifest.get("emitted"), dict) and any(self.path.glob("*.next")):
            from tell.data.emit import move_in_emits
            with contextlib.suppress(OSError):  # a folder this process may not write: the old files stay
                move_in_emits(self.path, manifest["emitted"])
        for _ in range(2):  # a second look: a prepare may have moved its mixture in while this one was read
            sha, lines = _digest(self.mixture_path)
            if sha == want.get("sha256") and lines == want.get("examples"):
                return manifest
            if _digest(self.next_path) == (want.get("sha256"), want.get("examples")):
                # A prepare stopped after its manifest (the new pair's moment) and before moving its mixture in.
                try:
                    os.replace(self.next_path, self.mixture_path)
                except FileNotFoundError:
                    continue  # moved in meanwhile: read it again
                except OSError:
                    self.mixture_path = self.next_path  # a folder this process may not write: read it where it is
                return manifest
        if sha is None:
            raise TellError(f"no {self.MIXTURE}; expected a folder written by `tell prepare`", file=str(self.path))
        raise TellError(f"{self.MIXTURE} ({lines} lines, sha256 {sha[:12]}) does not match "
                        f"{self.MANIFEST} ({want.get('examples')} lines, sha256 {str(want.get('sha256'))[:12]}): "
                        "it was changed after `tell prepare` wrote it, or a prepare was cut short; prepare it "
                        "again (a sweep does so once the folder is deleted)", file=str(self.path))

    def records(self) -> Iterator[tuple[int, Record]]:
        """(1-based line, record) in training order. The one reader of mixture.jsonl."""
        if not self.mixture_path.is_file():
            raise TellError(f"no {self.MIXTURE}; expected a folder written by `tell prepare`", file=str(self.path))
        with open(self.mixture_path, "rb") as f:  # bytes: a non-UTF-8 line is one more bad line, not a crash
            for lineno, line in enumerate(f, 1):
                try:
                    yield lineno, record_from_json(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise TellError(f"not a mixture record ({type(e).__name__}: {e})", file=str(self.mixture_path),
                                    line=lineno) from None

    def source_records(self, source: str, *, unanchored: bool = False) -> list[Record]:
        """The records of one source (task or general); `unanchored` takes the anchor off again."""
        anchor = self.anchor() if unanchored else None
        return [anchor.remove(r) if anchor else r for _, r in self.records() if r.source == source]


class RunDir:
    """A `tell train` run folder."""

    CONFIG, MIXTURE_MANIFEST, LOG, METRICS = "config.json", "mixture_manifest.json", "train_log.jsonl", "metrics.json"
    CHECKPOINTS, ADAPTER = "checkpoints", "adapter"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / self.CONFIG
        self.mixture_manifest_path = self.path / self.MIXTURE_MANIFEST
        self.log_path = self.path / self.LOG
        self.metrics_path = self.path / self.METRICS
        self.checkpoints = self.path / self.CHECKPOINTS
        self.adapter = self.path / self.ADAPTER

    def started(self) -> bool:
        return self.config_path.is_file()

    def finished(self) -> bool:
        return self.metrics_path.is_file()

    def has_adapter(self) -> bool:
        return (self.adapter / "adapter_config.json").is_file()

    def config(self) -> dict:
        """The resolved `tell train` settings the run was started with."""
        return read_json(self.config_path, "a `tell train` run folder")["config"]

    def metrics(self) -> dict:
        return read_json(self.metrics_path, "a finished `tell train` run")

    def mixture_manifest(self) -> dict | None:
        return read_json(self.mixture_manifest_path, "") if self.mixture_manifest_path.is_file() else None

    def anchor(self) -> Anchor | None:
        """The anchor the run was trained with (from the copy of its mixture's manifest), or None. config.json
        records the anchor training saw: a copy whose anchor was edited since is refused, never used to prompt."""
        m = self.mixture_manifest()
        if not m:
            return None
        header = read_json(self.config_path, "a `tell train` run folder") if self.config_path.is_file() else {}
        if "anchor" in header and header["anchor"] != m.get("anchor"):
            raise TellError(f"{self.MIXTURE_MANIFEST}'s anchor differs from the one the run was trained with "
                            f"({self.CONFIG}: {json.dumps(header['anchor'])[:120]}); the copy was edited after "
                            "training: restore it (the mixture's manifest.json holds the anchor trained with)",
                            file=str(self.mixture_manifest_path), field="anchor")
        return Anchor.from_json(m.get("anchor"))

    def log(self, evals: bool = False) -> list[dict]:
        """train_log.jsonl's loss rows (with `evals`: its evaluation rows too, in order), up to a torn last line from
        a killed process."""
        return [r for r in self._log_rows() if evals or "eval" not in r]

    def eval_log(self) -> list[dict]:
        """The rows evaluations during training wrote (`tell.train.live_eval`): {step, epoch, eval: {set: ...}}."""
        return [r for r in self._log_rows() if "eval" in r]

    def _log_rows(self) -> list[dict]:
        rows = []
        if self.log_path.is_file():
            for line in self.log_path.read_text(encoding="utf-8").splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break
        return rows


class EvalDir:
    """A `tell eval` output folder."""

    CONFIG, PREDICTIONS, METRICS = "eval_config.json", "predictions.jsonl", "metrics.json"
    LM_EVAL_SAMPLES, LM_EVAL_CACHE = "lm_eval_samples.jsonl", "lm_eval_cache"  # `--lm-eval` (tell.eval.harness)

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / self.CONFIG
        self.predictions_path = self.path / self.PREDICTIONS
        self.metrics_path = self.path / self.METRICS
        self.lm_eval_samples_path = self.path / self.LM_EVAL_SAMPLES
        self.lm_eval_cache = self.path / self.LM_EVAL_CACHE

    def finished(self) -> bool:
        return self.metrics_path.is_file()

    def metrics(self) -> dict:
        return read_json(self.metrics_path, "a finished `tell eval`")
