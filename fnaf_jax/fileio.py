"""Writing files so that nothing half-written is ever read, and one writer at a time.

- ``atomic_path(path)``: a context manager yielding a temporary name in the same folder;
  on success the file is flushed to disk and renamed over ``path`` (atomic on POSIX), on
  any failure it is removed and ``path`` is left as it was.
- ``write_text``: the same for one string.
- ``exclusive_lock(path)``: an OS lock (``fcntl.flock``) on ``path + ".lock"``, released
  when the process exits or dies (no stale marker); a second writer gets a ``LockedError``
  naming the holder's PID. Readers never take it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from pathlib import Path

from fnaf_jax.errors import FnafError


class LockedError(FnafError):
    """Another process is writing the same output."""


class WriteError(FnafError):
    """The environment refused a write (disk full, permission denied, read-only, ...)."""


def describe_os_error(exc: OSError, path) -> str:
    """One line: what failed and where ("disk full", "permission denied", ...)."""
    reasons = {errno.ENOSPC: "disk full", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EROFS: "read-only file system", errno.ENOENT: "no such file or folder",
               errno.EDQUOT: "disk quota exceeded", errno.ENOTDIR: "a parent is not a folder"}
    reason = reasons.get(exc.errno, exc.strerror or type(exc).__name__)
    return f"{path}: {reason}"


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block ends."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise WriteError(describe_os_error(exc, path)) from None
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(describe_os_error(exc, path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def exclusive_lock(path, what: str = "output"):
    """Hold an exclusive OS lock on ``path.lock`` for the block (see the module docstring)."""
    lock_path = Path(str(path) + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_path, "a+")  # noqa: SIM115 (held for the whole block, closed in finally)
    except OSError as exc:
        raise WriteError(describe_os_error(exc, lock_path)) from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise LockedError(f"{path}: another process (PID {holder}) is writing this {what}; "
                              "wait for it to finish or choose another path") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock; the small .lock file stays (it holds no state)
