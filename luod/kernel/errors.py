"""LuoError: every failure of the kernel layer, with errno, operation, subject and a hint.

The hints are for the operator reading a log line or a REST problem document. They follow the
per-ioctl errno lists measured on Linux 7.2.13 (docs/kernel.md §4). The same ``code`` travels on the
VMM socket and over REST.
"""

from __future__ import annotations

import errno as E
import os
from typing import Final

# (operation, errno) -> hint. "*" matches any operation.
_HINTS: Final[dict[tuple[str, int], str]] = {
    ("open", E.EBUSY): "another process holds /dev/liveupdate open",
    ("open", E.ENOENT): "no /dev/liveupdate: kernel without CONFIG_LIVEUPDATE, or booted "
    "without liveupdate=on (or KHO off, see dmesg 'luo: Disabling liveupdate')",
    ("open", E.EIO): "deserializing the previous kernel's sessions failed; every open fails "
    "for the rest of this boot: report it and reboot cold (dmesg has the cause)",
    ("open", E.EACCES): "/dev/liveupdate is mode 0600 root: run luod as root",
    ("*", E.ENOTTY): "kernel without LUO, or a 32-bit process on a 64-bit kernel",
    ("CREATE_SESSION", E.EINVAL): "session names are 1..63 bytes without NUL",
    ("CREATE_SESSION", E.EEXIST): "an outgoing session with this name exists; luod must "
    "never trigger EEXIST (kernel bug, docs/kernel.md §4.4): create and close a dummy session "
    "before any reboot",
    ("CREATE_SESSION", E.ENOSPC): "outgoing session block chain is full (10000 blocks)",
    ("RETRIEVE_SESSION", E.ENOENT): "no incoming session with this name: cold boot, it was "
    "closed before the kexec, or it was already retrieved and finished",
    ("RETRIEVE_SESSION", E.EINVAL): "already retrieved and still open (by this or another "
    "process, e.g. PID 1 from the fd store): use that fd",
    ("PRESERVE_FD", E.EEXIST): "this token is already used in this session",
    ("PRESERVE_FD", E.EBADF): "the fd to preserve is not open",
    ("PRESERVE_FD", E.ENOENT): "no LUO handler for this fd kind in kernel {release}: only "
    "unlinked shmem (memfd without MFD_HUGETLB, O_TMPFILE on tmpfs) can be preserved",
    ("PRESERVE_FD", E.EBUSY): "this file (inode) is already preserved in some session, or "
    "was retrieved and its incoming session is not finished yet",
    ("PRESERVE_FD", E.EINVAL): "the session is incoming (retrieved): preserve needs an "
    "outgoing session",
    ("PRESERVE_FD", E.ENOMEM): "out of memory while pinning the file, or memcg limit hit",
    ("PRESERVE_FD", E.EFBIG): "file above UINT_MAX pages cannot be preserved",
    ("RETRIEVE_FD", E.ENOENT): "unknown token, or the session was already finished",
    ("RETRIEVE_FD", E.EINVAL): "the session is outgoing: retrieve needs an incoming session",
    ("RETRIEVE_FD", E.ENOMEM): "memcg charge failed while restoring: retrieve failures are "
    "permanent and this file's data is lost; retrieve from a cgroup with headroom",
    ("FINISH", E.EINVAL): "FINISH needs an incoming (retrieved) session",
    ("FINISH", E.EBUSY): "a file handler refused to finish (can_finish)",
    ("GET_NAME", E.EINVAL): "reserved field must be zero",
    ("*", E.EMFILE): "out of file descriptors: raise RLIMIT_NOFILE",
    ("kexec_file_load", E.ENOEXEC): "not a kernel image this kernel can kexec (bzImage with "
    "RELOCATABLE for x86_64)",
    ("kexec_file_load", E.EPERM): "needs CAP_SYS_BOOT; or kernel.kexec_load_disabled=1, or "
    "the kexec load limit was reached",
    ("kexec_file_load", E.EADDRNOTAVAIL): "kernel + initrd do not fit in KHO scratch: size "
    "kho_scratch= for the largest image on a cold boot",
    ("kexec_file_load", E.EKEYREJECTED): "image signature rejected (KEXEC_SIG enforced)",
    ("kexec_file_load", E.EBUSY): "another kexec load or exec is running",
    ("reboot", E.EINVAL): "no kexec image loaded (or not in the initial pid namespace)",
    ("reboot", E.EPERM): "needs CAP_SYS_BOOT",
    ("reboot", E.EBUSY): "another kexec load or exec holds the kexec lock",
    ("reboot", E.ENOSYS): "kexec is not supported by this kernel",
    ("*", E.EBADF): "the session object was already closed or detached",
    ("*", E.ENOSYS): "old kernel, or a seccomp filter blocks this syscall",
}

_REBOOT_FALLBACK: Final = (
    "LUO freeze failed and the kernel rolled it back: sessions are still preserved, fix the "
    "cause and retry"
)


def hint_for(op: str, errno: int, *, release: str = "") -> str:
    hint = _HINTS.get((op, errno)) or _HINTS.get(("*", errno))
    if hint is None and op == "reboot":
        hint = _REBOOT_FALLBACK
    if hint is None:
        return ""
    return hint.format(release=release or os.uname().release)


class LuoError(OSError):
    """An operation on /dev/liveupdate, a session, or kexec failed with ``errno``."""

    def __init__(
        self,
        errno: int,
        op: str,
        *,
        session: str | None = None,
        token: int | None = None,
        hint: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(errno, os.strerror(errno))
        self.op = op
        self.session = session
        self.token = token
        self.hint = hint if hint is not None else hint_for(op, errno)
        self.detail = detail

    @property
    def code(self) -> str:
        """Stable error code shared by the socket and REST: ``luo-<errno name>``."""
        return "luo-" + E.errorcode.get(self.errno or 0, str(self.errno)).lower()

    def __str__(self) -> str:
        subject = ""
        if self.session is not None:
            subject += f" session={self.session!r}"
        if self.token is not None:
            subject += f" token={self.token:#x}"
        text = f"{self.op}{subject}: [{E.errorcode.get(self.errno or 0, self.errno)}] "
        text += f"{self.strerror}"
        if self.detail:
            text += f" ({self.detail})"
        if self.hint:
            text += f" — hint: {self.hint}"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.errno, self.op, self.session, self.token, self.hint, self.detail))


def _rebuild(
    errno: int, op: str, session: str | None, token: int | None, hint: str, detail: str | None
) -> LuoError:
    return LuoError(errno, op, session=session, token=token, hint=hint, detail=detail)
