"""Output destinations: checked before minutes of compiling, and one translation of an OSError met while
writing into a WriteError that names the path and the fix. Ctrl-C is deferred while a write is committed or
cleaned up, so an interrupt never leaves a half-renamed bundle or a stray temporary sibling."""
from __future__ import annotations

import errno
import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hetc.errors import WriteError

# errno -> the fix to suggest; any other OSError gets the system's own words and "choose another path".
_FIXES = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is exhausted; free some space or write elsewhere",
    errno.EACCES: "permission denied; choose a directory you can write to",
    errno.EPERM: "permission denied; choose a directory you can write to",
    errno.EROFS: "the file system is read-only; choose a directory you can write to",
    errno.ENAMETOOLONG: "a name is too long for the file system; choose a shorter name",
    errno.ENOTDIR: "a part of the path is a regular file, not a directory; choose another path",
    errno.ENOENT: "the file system does not let hetc create it there; choose a directory you can write to",
    errno.EEXIST: "a part of the path is a regular file, not a directory; choose another path",
}


def write_error(path: str | os.PathLike[str], error: OSError, what: str) -> WriteError:
    """The user-facing error for an OSError met while writing ``what`` (e.g. "the bundle") to ``path``."""
    fix = _FIXES.get(error.errno or 0, f"{error.strerror or error}; choose another path")
    return WriteError(f"cannot write {what} to '{path}': {fix}")


def name_max(directory: Path) -> int:
    """The longest file name the file system holding ``directory`` accepts (255 when it cannot say)."""
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def make_parent(path: Path, what: str) -> Path:
    """Create ``path``'s parent directory (like ``mkdir -p``) and return it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error, what) from None
    if not path.parent.is_dir():
        raise write_error(path, OSError(errno.ENOTDIR, "not a directory"), what)
    return path.parent


def probe_directory_name(path: Path, shown: Path, what: str) -> None:
    """Create and remove the directory ``path`` (the temporary sibling a write goes through): proves that
    its parent is writable and that its name fits. Errors name ``shown``, the path the user gave."""
    limit, size = name_max(path.parent), len(os.fsencode(path.name))
    if size > limit:
        room = limit - (size - len(os.fsencode(shown.name)))
        raise WriteError(f"cannot write {what} to '{shown}': its name is too long for the file system (hetc "
                         f"writes it first as '{path.name}', {size} bytes, over the limit of {limit}); choose a "
                         f"name of at most {room} bytes")
    try:
        path.mkdir()
        path.rmdir()
    except OSError as error:
        raise write_error(shown, error, what) from None


def check_output_file(path: Path, what: str) -> None:
    """Refuse, before any work, a file destination that cannot be written: parent not creatable or not
    writable, a directory in the way, a name too long."""
    parent = make_parent(path, what)
    if path.is_dir():
        raise WriteError(f"cannot write {what} to '{path}': it is a directory; give a file name such as "
                         f"{path / 'outputs.npz'}")
    if len(os.fsencode(path.name)) > name_max(parent):
        raise write_error(path, OSError(errno.ENAMETOOLONG, "name too long"), what)
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".hetc-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise write_error(path, error, what) from None


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends; it is delivered right after. For the short steps that
    must not stop half-way: renaming a bundle into place, removing a temporary directory."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
