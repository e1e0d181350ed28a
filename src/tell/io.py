"""Atomic file writes and content hashes.

Every result file is written to a temporary file in the same folder and moved into place with
`os.replace`, so a killed process never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO


# OSErrors that mean the file system refused a write (permission, read-only, full, over quota, too large): the
# user's to fix, so one line naming the file (TellError), never a traceback.
REFUSED_WRITES = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def refused_write(e: OSError, path: str | os.PathLike):
    """The TellError for an OSError in REFUSED_WRITES while writing `path`, else None."""
    from tell.errors import TellError

    if e.errno not in REFUSED_WRITES:
        return None
    where = f" on {disk_of(e.filename or path)}" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
    return TellError(f"cannot write ({e.strerror}){where}; choose a folder you can write to, or free space (nothing "
                     "half-written is left)", file=str(e.filename or path))


def disk_of(path: str | os.PathLike) -> str:
    """The file system `path` is written to, for an error about space: its mount point and what it has free
    ("the disk mounted at /data (1.2 GiB free of 50.0 GiB)"); the nearest existing folder stands in for a path
    not made yet."""
    p = Path(os.path.abspath(path or "."))
    while not p.exists() and p != p.parent:
        p = p.parent
    mount = p
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        use = shutil.disk_usage(p)
    except OSError:
        return f"the disk mounted at {mount}"
    gib = 2 ** 30
    return f"the disk mounted at {mount} ({use.free / gib:.1f} GiB free of {use.total / gib:.1f} GiB)"


_FULL = ("File too large", "No space left on device", "Disk quota exceeded", "os error 27", "os error 28")


def full_disk(e: BaseException) -> bool:
    """Whether `e` (or what it was raised from) is a write refused for space: libraries that write through their
    own code (torch's checkpoint writer, safetensors, tokenizers) raise RuntimeError or their own types, not
    OSError, with the system's message inside."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT):
            return True
        if any(m in str(e) for m in _FULL):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[TextIO]:
    """Open a temp file beside `path`; on success fsync and rename it over `path` (and delete the temp files of
    `path` that killed writers left), on error delete it. A write the file system refuses (`REFUSED_WRITES`) is
    a TellError naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise (refused_write(e, path) or e) from None
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: a result file gets what a plain open() would give
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and refused_write(e, path):
            raise refused_write(e, path) from None
        raise
    remove_stale_tmp(path)


def append(path: str | os.PathLike, data: str | bytes, *, sync: bool = False) -> None:
    """Append `data` to the file `path` (created if missing): a log line, a cache's new entries. A write the file
    system refuses (`REFUSED_WRITES`) is a TellError naming the file (a failed write() has no file name of its
    own); `sync` makes it durable before returning."""
    try:
        with open(path, "ab" if isinstance(data, bytes) else "a", **({} if isinstance(data, bytes) else
                                                                      {"encoding": "utf-8"})) as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        if e.errno not in REFUSED_WRITES:
            raise
        from tell.errors import TellError

        raise TellError(f"cannot append ({e.strerror}); choose a folder you can write to, or free space (a torn "
                        "last line may be left: its readers skip it)", file=str(e.filename or path)) from None


def _umask() -> int:
    """The process's umask (read by setting it, then putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Temp files are named `.NAME.<pid>@<host>.<random>.tmp`, so that the next successful write of NAME can tell the
# ones a killed writer left (its process is gone) from those of a writer still at work.
_HOST = socket.gethostname().replace(".", "_")


def _left_by_dead_writer(tmp: Path) -> bool:
    writer = tmp.name[:-len(".tmp")].rsplit(".", 2)[-2]  # .NAME.<writer>.<random>.tmp; NAME may hold dots
    pid, _, host = writer.partition("@")
    if not host:
        return True  # named before writers were recorded
    if host != _HOST or not pid.isdigit():
        return False  # another machine's (a shared folder): its writer cannot be checked from here
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def remove_stale_tmp(path: str | os.PathLike, *, every_file: bool = False) -> None:
    """Delete the temp files that killed writers left behind (`atomic_open`'s `.NAME.*.tmp`): those of the file
    `path`, or with `every_file` those of every file in the folder `path`."""
    path = Path(path)
    folder, pattern = (path, ".*.*.tmp") if every_file else (path.parent, f".{glob.escape(path.name)}.*.tmp")
    for tmp in folder.glob(pattern):
        if tmp.is_file() and _left_by_dead_writer(tmp):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


FOLDER_LOCK = ".tell.lock"  # the lock file `folder_lock` keeps in the folder it guards (gone when released)


@contextlib.contextmanager
def exclusive_lock(lock: Path, busy: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive kernel flock on the file `lock` (created) for as long as the block runs. When another
    process holds it, `busy()` is called once: raise to refuse, or return to wait for it. The file is removed on
    release; a process that locked a file removed under it tries again on the new one (its inode differs)."""
    import fcntl

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                busy()
            except BaseException:
                os.close(fd)
                raise
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (creating it) for as long as the block runs, or refuse at once when
    another process holds it: one process writes into a run folder at a time. A kernel flock (`exclusive_lock`),
    not a claim file with a heartbeat (as sweep cells' `tell.experiments.claims`): it goes with its process, so a
    killed holder never leaves a lock to wait out."""
    from tell.errors import TellError

    folder = Path(folder)
    lock = folder / FOLDER_LOCK

    def refuse() -> None:
        raise TellError(f"another process is writing into this folder ({what}; {lock.name} is locked); wait "
                        "for it to finish or choose another folder", file=str(folder))

    with contextlib.ExitStack() as stack:
        if not folder.exists():  # a folder made only to hold the lock goes again if nothing was written into it
            stack.callback(_remove_if_empty, folder)  # registered first: runs after the lock is released
        try:
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(exclusive_lock(lock, refuse))
        except OSError as e:
            raise (refused_write(e, lock) or e) from None
        yield


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def expect_folder(dest: str | os.PathLike) -> Path:
    """`dest` as a Path, refused at once (before any work) when it, or a folder above it, is a file."""
    dest = Path(dest)
    for p in (dest, *dest.parents):
        if p.exists():
            if not p.is_dir():
                from tell.errors import TellError

                raise TellError("is a file (or lies under one); expected a folder", file=str(dest))
            break
    return dest


@contextlib.contextmanager
def staged_output(dest: str | os.PathLike, replaces: tuple[str, ...] = (), last: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a private temp folder inside the folder `dest` to write a result's files into (a result of several
    files: a report and its plots, a probe, a built data set). Only when the block ends without error do they
    move into `dest`, each whole (`os.replace`), those named in `last` after the rest (a reader that sees the
    last file sees the set); then the files of `dest` matching a `replaces` glob that the new set does not hold
    (an earlier result's, which would sit beside this one's) are deleted, and every other file of `dest` (the
    user's) stays. On an error in the block the temp folder goes and `dest` holds what it held before; a `dest`
    made for this result is removed again (a failed first run leaves no empty folder). Errors name the file in
    `dest` that was being written, never the temp folder."""
    dest = expect_folder(dest)
    made = [p for p in (dest, *dest.parents) if not p.exists()]  # deepest first
    tmp = None
    try:
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            from tell.errors import TellError

            raise TellError("is a file (or lies under one); expected a folder", file=str(dest)) from None
        tmp = Path(tempfile.mkdtemp(prefix=f".staged.{os.getpid()}@{_HOST}.", suffix=".tmp", dir=dest))
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:
            _remove_if_empty(folder)
        shown = _named_in(e, tmp, dest)
        if shown is e:
            raise
        raise shown from None
    new = sorted((p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file()), key=lambda r: (str(r) in last, str(r)))
    for rel in new:  # same file system: renames that do not fail for space; interrupted, the rest waits in tmp
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, dest / rel)
    for old in {p for pattern in replaces for p in dest.glob(pattern) if p.is_file()} - {dest / r for r in new}:
        old.unlink()
    shutil.rmtree(tmp, ignore_errors=True)  # empty folders of subfolders the result had
    for left in dest.glob(".staged.*.tmp"):  # left by a writer killed in the block
        if left.is_dir() and _left_by_dead_writer(left):
            shutil.rmtree(left, ignore_errors=True)


def _named_in(e: BaseException, tmp: Path | None, dest: Path) -> BaseException:
    """`e` as the one-line error the user should see: a write refused under the temp folder `tmp` names the file
    in `dest` it was for (the temp folder is gone by then); anything else is `e` itself."""
    from tell.errors import TellError

    def mapped(name) -> str:
        text = str(name or dest)
        if tmp is not None and text.startswith(str(tmp)):
            return str(dest / Path(text).relative_to(tmp))
        return text

    if isinstance(e, TellError) and e.file is not None and mapped(e.file) != str(e.file):
        return TellError(e.message, file=mapped(e.file), line=e.line, field=e.field, record=e.record)
    if isinstance(e, OSError) and e.errno in REFUSED_WRITES:
        return refused_write(e, dest) if not e.filename else refused_write(
            OSError(e.errno, e.strerror, mapped(e.filename)), dest)
    return e


def dumps_json(obj: Any) -> str:
    """Stable JSON text (sorted keys, UTF-8 kept) so equal objects give equal bytes."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, indent=2) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path) as f:
        f.write(dumps_json(obj))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---- JSON read strictly: a key twice in one object (orjson and json keep the last one silently) ----

class DuplicateKey(Exception):
    pass


def _unique_pairs(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        raise DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return d


CHECKING_DECODER = json.JSONDecoder(object_pairs_hook=_unique_pairs)


def not_a_file(path: Path) -> str:
    """Why `path` is no file tell can read, in words for an error message: "no such file", "is a folder", "a
    symlink loop", "a broken symlink (to X, ...)", "not a regular file (a FIFO)"."""
    import stat

    path = Path(path)
    if not os.path.lexists(path):
        return "no such file"
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            return "a symlink loop"
        except OSError as e:
            return "a symlink loop" if e.errno == errno.ELOOP else \
                f"a broken symlink (to {os.readlink(path)}, which does not exist)"
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(mode):
        return "is a folder"
    if stat.S_ISREG(mode):
        return "is a file"
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not a regular file ({kind})"


def duplicate_key(text: bytes | str) -> str | None:
    """The first key that appears twice in one object of the JSON `text` (orjson, like json, keeps the last one
    silently), or None. A second parse, with a hook that sees every object's pairs."""
    try:
        CHECKING_DECODER.decode(text.decode("utf-8") if isinstance(text, bytes) else text)
    except DuplicateKey as e:
        return str(e.args[0])
    except (ValueError, UnicodeDecodeError):  # what orjson read, json may not (or the reverse): not our question
        return None
    return None


# Names that end like a file (`tell.models` tells a local path from a Hub id with them)
_FILE_SUFFIXES = (".json", ".jsonl", ".model", ".gguf", ".safetensors", ".bin", ".pt", ".pth", ".txt", ".yaml",
                  ".yml", ".tiktoken")


def looks_like_path(name: str) -> bool:
    """Whether `name` is meant as a local path, not a Hub id: it starts with . / or ~, holds a backslash, ends in
    a file's name, or is no valid Hub id (`owner/name`, or a bare `name`; `a/b/c` is none). A Hub id that happens
    to exist here as a folder is a local path too (`_local_folder` checks that)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~")) or "\\" in name or Path(name).suffix.lower() in _FILE_SUFFIXES:
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:  # what from_pretrained would refuse as "Repo id must be in the form ..."
        return True
    return False
