"""luod's own directories and the files in them, opened so that nobody else can redirect them.

The policy (docs/operations.md, "Security"):

- The state directory (manifest, journal, history, the lock) is created 0750, the runtime
  directory (sockets, the keeper) 0755; an existing one is used only when it is a directory
  (not a symlink) owned by luod's uid and writable by nobody else (no group or other write
  bit). Anything else is refused with ``unsafe-dir``: another user could plant links or
  files in it.
- Every file luod keeps there is 0600: session names, owners and tokens are nobody else's
  business (``luoctl`` and fleet tooling read them through the API).
- Files are opened relative to the directory's fd with ``O_NOFOLLOW`` (a planted symlink is
  refused, never followed); a new file is written under a random name created with
  ``O_EXCL`` and renamed into place, so a crash leaves the old or the new version.
- One luod per state directory: ``lock`` holds ``flock`` on ``STATE_DIR/luod.lock`` for the
  process's life; a second luod gets ``state-dir-locked`` before it touches anything.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from luod.errors import LuodError
from luod.kernel import OwnedFd

STATE_DIR_MODE: Final = 0o750
RUNTIME_DIR_MODE: Final = 0o755
FILE_MODE: Final = 0o600
LOCK_NAME: Final = "luod.lock"
STATE_FILES: Final = ("manifest.json", "journal.jsonl", "history.jsonl")
"""Given FILE_MODE at start-up, whatever an older luod (or the umask) made them."""
UNSAFE_BITS: Final = stat.S_IWGRP | stat.S_IWOTH
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def prepare(path: Path, mode: int) -> None:
    """Create ``path`` (and its parents) with ``mode`` when missing, then ``check_dir`` it."""
    if not os.path.lexists(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, mode)
            os.chmod(path, mode)  # the umask must not decide it
    check_dir(path)


def check_dir(path: Path, uid: int | None = None) -> None:
    """Raise ``unsafe-dir`` unless ``path`` is a real directory of ``uid`` (luod's) that no
    other user may write to."""
    own = os.geteuid() if uid is None else uid
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise LuodError(
            "unsafe-dir", f"cannot look at {path}: {exc.strerror}", "create it", exc.errno
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        problem = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise LuodError("unsafe-dir", f"{path} is {problem}", f"make {path} a plain directory")
    if st.st_uid != own:
        raise LuodError(
            "unsafe-dir",
            f"{path} belongs to uid {st.st_uid}, not to luod's uid {own}",
            f"chown {own} {path}: another user could plant files luod would trust",
        )
    if st.st_mode & UNSAFE_BITS:
        raise LuodError(
            "unsafe-dir",
            f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o})",
            f"chmod go-w {path}",
        )


@contextlib.contextmanager
def opened_dir(path: Path) -> Iterator[int]:
    """An fd of directory ``path`` (not followed if it is a symlink), closed on exit."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Replace ``path`` by a file holding ``data`` (mode 0600): the old or the new, never a
    mix, and never through a symlink planted at the temporary or the final name."""
    with opened_dir(path.parent) as directory:
        temporary = f".{path.name}.{os.urandom(8).hex()}.tmp"  # as secrets.token_hex
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS
        fd = os.open(temporary, flags, FILE_MODE, dir_fd=directory)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(data)
            os.fchmod(fd, FILE_MODE)
            os.close(fd)
            fd = -1
            os.replace(temporary, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory)
            raise


_WRITE_HINTS: Final = {
    errno.EMFILE: "luod is out of file descriptors: raise its LimitNOFILE= (docs/limits.md)",
    errno.ENFILE: "the host is out of file descriptors (fs.file-max)",
    errno.ENOSPC: "the state directory's file system is full: make room there",
    errno.EDQUOT: "luod's disk quota on the state directory is used up",
    errno.EROFS: "the state directory's file system is mounted read-only",
    errno.EIO: "the state directory's disk reports I/O errors: see the kernel log",
}


def write_failed(state_dir: Path, exc: OSError) -> LuodError:
    """``state-write-failed`` for a change luod made (in its registry and the kernel) but could
    not record in ``state_dir``; its caller writes the whole manifest at the next change."""
    return LuodError(
        "state-write-failed",
        f"the change is made, but luod could not record it in {state_dir}: "
        f"{exc.strerror or exc}; the next change writes the whole manifest",
        _WRITE_HINTS.get(exc.errno or 0, "see luod's state directory and its log"),
        exc.errno,
    )


def append(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` with one write(2), creating it 0600."""
    with _open_append(path) as fd:
        os.write(fd.fileno(), data)


class AppendFile:
    """An append-only file of luod's (the journal, the running update's record), kept open
    between lines: each line is one write(2) to an ``O_APPEND`` fd, where ``append`` opens the
    directory and the file, checks it, writes and closes both (the RECLAIM/DONE path writes
    four lines a VM: bench/NOTES.md). A line is where ``append`` would put it, when it would:
    in the file at ``path`` once ``write`` returns (no fsync in either; luod.core.manifest).

    luod replaces these files only by renaming a new one over them (``write_atomic``) or
    unlinking them, which leaves the kept fd on a file ``path`` no longer names: before each
    line the fd's file and ``path``'s are compared (an fstat and a stat), and on a difference
    the fd is closed and ``path`` opened again. A write that fails closes it too (the next line
    opens ``path`` again). Its owner closes it at shutdown; ``close`` may be called twice, and
    a later line opens it again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: OwnedFd | None = None
        self._lock = threading.Lock()  # a registry call may run in a worker thread

    def write(self, data: bytes) -> None:
        with self._lock:
            fd = self._current()
            try:
                os.write(fd.fileno(), data)
            except BaseException:
                self._drop()
                raise

    def open(self) -> None:
        """Open ``path`` now (creating it), so that the next line only writes: the handoff's
        last line is written inside every VM's pause, where a new file cost a TCG guest about
        1 ms more, and the sync after it that file's metadata (bench/NOTES.md)."""
        with self._lock:
            self._current()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _current(self) -> OwnedFd:
        fd = self._fd
        if fd is not None and self._still_named(fd):
            return fd
        self._drop()
        self._fd = _open_append(self.path)
        return self._fd

    def _still_named(self, fd: OwnedFd) -> bool:
        """Whether ``path`` still names the file ``fd`` is open on, by identity (device and
        inode): not by fstat's link count, which on 9p (cache=loose; a state directory on a
        share) still reads 1 for a file renamed over, and fstat of a removed one fails there."""
        try:
            held = os.fstat(fd.fileno())
            named = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)

    def _drop(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fd.close()


def _open_append(path: Path) -> OwnedFd:
    """``path`` opened to append (created 0600), refused unless a regular file."""
    with opened_dir(path.parent) as directory:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _FILE_FLAGS
        fd = OwnedFd(os.open(path.name, flags, FILE_MODE, dir_fd=directory))
    try:
        _regular(fd.fileno(), path)
    except BaseException:
        fd.close()
        raise
    return fd


def read(path: Path) -> bytes | None:
    """The content of regular file ``path``; None when there is none. A symlink, a FIFO or a
    device there raises OSError (ELOOP, or EINVAL for what is not a regular file)."""
    fd = _open_regular(path)
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "rb", closefd=False) as source:
            return source.read()
    finally:
        os.close(fd)


@contextlib.contextmanager
def mapped(path: Path) -> Iterator[mmap.mmap | bytes]:
    """Regular file ``path`` mapped read-only, as ``read`` checks it (b"" when missing or
    empty): a reader copies out only what it takes, and the heap holds none of the rest. luod
    never truncates its files in place (``write_atomic`` renames a new inode over them), so the
    mapping cannot lose its pages under the reader (SIGBUS)."""
    fd = _open_regular(path)
    if fd is None:
        yield b""
        return
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            yield b""
            return
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data:
            yield data
    finally:
        os.close(fd)


def _open_regular(path: Path) -> int | None:
    try:
        with opened_dir(path.parent) as directory:
            fd = os.open(path.name, os.O_RDONLY | _FILE_FLAGS, dir_fd=directory)
    except FileNotFoundError:
        return None
    try:
        _regular(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlink(path: Path) -> None:
    """Remove ``path`` (the name itself, a symlink included); missing is fine."""
    with opened_dir(path.parent) as directory, contextlib.suppress(FileNotFoundError):
        os.unlink(path.name, dir_fd=directory)


def tighten(path: Path) -> None:
    """Give an existing file of luod's the policy's mode (an older luod left 0644 or the
    umask's). Never follows a symlink; a missing file is fine."""
    with opened_dir(path.parent) as directory:
        try:
            fd = os.open(path.name, os.O_RDONLY | _FILE_FLAGS, dir_fd=directory)
        except FileNotFoundError:
            return
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)


class StateLock:
    """``flock`` on STATE_DIR/luod.lock, held until ``close``: one luod per state directory."""

    def __init__(self, state_dir: Path) -> None:
        path = state_dir / LOCK_NAME
        with opened_dir(state_dir) as directory:
            flags = os.O_RDWR | os.O_CREAT | _FILE_FLAGS
            self._fd = os.open(LOCK_NAME, flags, FILE_MODE, dir_fd=directory)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(self._fd)
            self.close()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise LuodError(
                "state-dir-locked",
                f"another luod{holder} runs on {state_dir} (it holds {path})",
                "stop that luod first, or give this one its own --state-dir and --runtime-dir",
            ) from exc
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f" (pid {pid})"
    return ""


def _regular(fd: int, path: Path) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
