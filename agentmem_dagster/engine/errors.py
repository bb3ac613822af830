"""Failures of the environment, explained: which store (or model), what is wrong with it, and
the setting to change. Library errors are translated where the stores and the model are
opened and written, so a run fails with one readable sentence instead of a driver's message."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# (cause, markers in the library's message, errno values, what to do)
CAUSES = [
    ("is locked by another connection", ("database is locked", "database table is locked", "sqlite_busy"), (),
     "wait for the other writer to finish, or set {setting} to another database"),
    ("has no space left on its disk", ("no space left", "os error 28", "database or disk is full", "quota exceeded"),
     (errno.ENOSPC, errno.EDQUOT), "free space there, or set {setting} (or AGENTMEM_HOME) to a disk with room"),
    ("is read-only", ("readonly database", "read-only file system", "os error 30", "permission denied", "os error 13"),
     (errno.EROFS, errno.EACCES, errno.EPERM), "make it writable, or set {setting} to a writable location"),
]
LOCKED = CAUSES[0][0]


class StoreError(RuntimeError):
    """A store failed. `transient` says whether the same call may succeed if tried again (a
    lock, a serialization failure, a dropped connection) or never will as things are (a full
    or read-only disk, a constraint violated, bad SQL). Each adapter decides which from its
    driver's error classes and codes (SQLSTATE on PostgreSQL), never from message text where
    the driver gives more; see `errors_of` in each store."""

    transient = False

    def __init__(self, message: str, transient: bool | None = None):
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class TransientStoreError(StoreError):
    """Worth retrying: the store was busy, a transaction lost a race, a connection dropped."""

    transient = True


class TerminalStoreError(StoreError):
    """Not worth retrying: the same call fails the same way until someone changes something."""

    transient = False


class StoreUnavailable(StoreError):
    """A store or the embedding model cannot serve the run as configured. The message names
    the cause and the setting to change. `transient` is true for a lock, which may clear."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message, transient)


def local_path(location: str) -> Path | None:
    """The path of a local store location; None for a server or object-store URI."""
    return None if "://" in location else Path(location).absolute()


def existing_dir(path: Path) -> Path:
    """`path` or its nearest ancestor that is a directory."""
    return next(p for p in [path, *path.parents] if p.is_dir())


def detail(exc: BaseException) -> str:
    """The library's message on one line, without Rust source locations."""
    text = re.sub(r",?\s*/\S+\.rs:\d+:\d+", "", str(exc)).strip()
    return " ".join(text.split())[:300] or type(exc).__name__


def explain(
    exc: BaseException, what: str, setting: str, *, cause: str | None = None, path: Path | None = None
) -> StoreUnavailable | None:
    """`exc` as a StoreUnavailable when the environment caused it (a lock, a full or read-only
    disk), or when `cause` is given (e.g. opening failed); None otherwise. `path` is the local
    location, tested for writability when the library's message does not say why."""
    if isinstance(exc, StoreUnavailable):
        return exc
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    advice = "check {setting}"
    for found, markers, codes, todo in CAUSES:
        if code in codes or any(marker in text for marker in markers):
            cause, advice = found, todo
            break
    else:
        if path is not None and not os.access(existing_dir(path), os.W_OK):
            cause, advice = CAUSES[2][0], CAUSES[2][3]
        elif cause is None:
            return None
    return StoreUnavailable(
        f"{what} {cause} ({detail(exc)}): {advice.format(setting=setting)}.", transient=cause == LOCKED
    )


@contextmanager
def explained(explain_fn: Callable[[BaseException], StoreUnavailable | None]) -> Iterator[None]:
    """Re-raise what `explain_fn` recognises as a StoreUnavailable; anything else unchanged."""
    try:
        yield
    except Exception as exc:
        found = explain_fn(exc)
        if found is None or found is exc:
            raise
        raise found from exc
