"""An in-process model of the LUO kernel (docs/kernel.md §10.1), behind the same Platform interface.

``sim_backend(STATE_DIR)`` gives a :class:`~luod.kernel.Backend` whose device, sessions and
kexec behave like Linux 7.2.13 down to the errno and the order of the checks: single open
(EBUSY); lazy deserialization at the first open with a sticky EIO; outgoing and incoming
namespaces; tokens unique per session (EEXIST checked before EBADF); global identity by inode
across outgoing and retrieved-but-unfinished files (EBUSY); ENOENT for anything but unlinked
non-hugetlb shmem; implicit FINISH when a retrieved session's last fd closes; FINISH discarding
unretrieved files; sticky retrieve failures; reboot refused (EINVAL) without a loaded image.
Each instance is one boot. ``reboot_kexec`` persists every open outgoing session (contents and
position read at that moment) into STATE_DIR and raises :class:`SimulatedKexec`; a new instance
on STATE_DIR sees them as incoming with the liveupdate number incremented. The 51-session EEXIST
poison (docs/kernel.md §4.4) makes the next instance raise :class:`SimulatedPanic`, and so does a
next kernel whose image declares another LUO ABI; which kernel a boot is, what its debugfs
shows and what it does with a handover it cannot take: luod.kernel._simabi.

What the simulator cannot reproduce — their contract tests run on the real kernel only
(``kernel_only`` marker):

- the size freeze of a preserved memfd: EPERM for ftruncate, fallocate and writes reaching EOF
  on the caller's own fd (the real kernel enforces it in shmem; the simulator owns no shmem);
- EBUSY after ~150 ms when adding F_SEAL_WRITE to a preserved (pinned) memfd;
- population and pinning of sparse memfds at preserve time (memory accounting);
- memcg charging of retrieved pages to the retrieving task (use ``fail_next_retrieve`` to
  model a charge failure);
- blocking for ever of LUO calls after serialization: the simulator raises
  :class:`SimulatedKexec` instead, and the calling "kernel" is gone;
- EFAULT quirks of unwritable response buffers beyond a too-short argument buffer;
- ``/proc/PID/fd`` links: a simulated session fd reads ``pipe:[N]``, not
  ``anon_inode:[luo_session] NAME``.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import select
import struct
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Final

from luod.kernel import _simabi, _simdisk, memfd, probes, uapi
from luod.kernel._simmodel import (
    IncomingFile,
    OutgoingFile,
    SimSession,
    check_preservable,
    fail,
    identity,
    restore_memfd,
)
from luod.kernel.backend import Backend
from luod.kernel.device import DEFAULT_PATH
from luod.kernel.fd import OwnedFd
from luod.kernel.images import HandoverBlobs
from luod.kernel.platform import KernelGone
from luod.kernel.probes import Holder, KernelInfo

SESSIONS_PER_BLOCK: Final = 51
MAX_BLOCKS: Final = 10000
DEFAULT_CMDLINE: Final = "console=ttyS0 kho=on liveupdate=on"
SIM_RELEASE: Final = _simabi.SIM_RELEASE
BZIMAGE_VERSION_POINTER: Final = 0x20E  # boot protocol: kernel_version, relative to 0x200
_DEVICE_NRS: Final = (uapi.CREATE_SESSION, uapi.RETRIEVE_SESSION)
_SESSION_CMDS: Final = {
    0x40: uapi.SESSION_PRESERVE_FD,
    0x41: uapi.SESSION_RETRIEVE_FD,
    0x42: uapi.SESSION_FINISH,
    0x43: uapi.SESSION_GET_NAME,
}


class SimulatedKexec(KernelGone):
    """The simulated machine kexec'd: this kernel instance is gone; start a new SimKernel."""


class SimulatedPanic(RuntimeError):
    """The simulated next kernel panicked early in boot (docs/kernel.md §2.3)."""


class SimKernel:
    """One boot of a simulated LUO kernel; implements luod.kernel.platform.Platform."""

    name = "sim"

    def __init__(
        self,
        state_dir: Path,
        *,
        cmdline: str | None = None,
        eager_release: bool = False,
        read_abi: _simabi.ReadAbi | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._epoll = select.epoll()
        self._readers: dict[int, SimSession | None] = {}  # reader fd -> session (None: device)
        self._sessions: dict[tuple[int, int], SimSession] = {}
        self._outgoing: dict[str, SimSession] = {}
        self._incoming: dict[str, list[IncomingFile]] = {}
        self._retrieved: dict[str, SimSession] = {}
        self._preserved: set[tuple[int, int]] = set()
        self._device: tuple[OwnedFd, tuple[int, int]] | None = None
        self._deserialized: int | None = None  # None: not yet; 0: ok; errno: sticky failure
        self._poisoned = False
        self._image: tuple[str, str, str] | None = None  # path, cmdline, release
        self._gone = False
        self._retrieve_faults: dict[tuple[str, int], int] = {}
        self._reboot_fault = 0
        self.boot_id = str(uuid.uuid4())
        self._boot(cmdline, read_abi)
        if eager_release:
            threading.Thread(target=self._release_loop, name="sim-release", daemon=True).start()

    # --- boot ----------------------------------------------------------------------------
    def _boot(self, cmdline: str | None, read_abi: _simabi.ReadAbi | None) -> None:
        taken = _simdisk.consume(self.state_dir)
        self.liveupdate_number, self.previous_release, self.kexec_count = 0, None, 0
        self.cmdline = cmdline or DEFAULT_CMDLINE
        self._handover_files: list[tuple[str, list[IncomingFile]]] = []
        self.kernel = _simabi.booted_kernel(taken[0] if taken else None, read_abi)
        if taken and taken[0].release and self.kernel is _simabi.NATIVE:  # unread image
            self.kernel = dataclasses.replace(self.kernel, release=taken[0].release)
        self.image = Path(taken[0].image) if taken and taken[0].image else None
        self.cold_boot = taken is None
        if taken is None:
            self.image = _simabi.installed_native_image(self.state_dir)
            return
        handover, directory = taken
        if handover.poisoned:
            raise SimulatedPanic("luo: Block contains invalid entry count: 0")
        self.cmdline = cmdline or handover.cmdline
        self.previous_release, self.kexec_count = handover.previous_release, handover.kexec_count
        refused = _simabi.refusal(handover, self.kernel)
        if refused is not None and refused[1]:
            raise SimulatedPanic(
                f"{refused[0]}; Kernel panic - not syncing: The incoming tree failed to "
                "initialize properly [-22], disabling live update"
            )
        if handover.luo and refused is None:
            self.liveupdate_number = handover.liveupdate_num
            for record in handover.sessions:
                files = [IncomingFile(f, directory / f.data) for f in record.files]
                self._handover_files.append((record.name, files))

    @property
    def liveupdate_enabled(self) -> bool:
        return bool(probes.cmdline_flag(self.cmdline, "liveupdate")) and (
            probes.cmdline_flag(self.cmdline, "kho") is not False
        )

    # --- Platform --------------------------------------------------------------------------
    def open_device(self, path: str) -> OwnedFd:
        with self._lock:
            self._enter()
            if not self.liveupdate_enabled:
                raise fail(errno.ENOENT)
            if self._device is not None:
                raise fail(errno.EBUSY)
            self._deserialize()
            reader, writer = os.pipe2(os.O_CLOEXEC)
            self._device = (OwnedFd(reader), identity(writer))
            self._watch(reader, None)
            return OwnedFd(writer)

    def ioctl(self, fd: int, cmd: int, buf: Any) -> None:
        with self._lock:
            self._enter()
            view = memoryview(buf).cast("B")
            try:
                key = identity(fd)
            except OSError as exc:
                raise fail(errno.EBADF) from exc
            if self._device is not None and key == self._device[1]:
                self._device_ioctl(cmd, view)
            elif key in self._sessions:
                self._session_ioctl(self._sessions[key], cmd, view)
            else:
                raise fail(errno.ENOTTY)

    def kexec_file_load(self, kernel: OwnedFd, initrd: OwnedFd | None, cmdline: bytes) -> None:
        with self._lock:
            header = os.pread(kernel.fileno(), 4, 0x202)
            if header != b"HdrS":
                raise fail(errno.ENOEXEC)
            path = os.readlink(f"/proc/self/fd/{kernel.fileno()}")
            self._image = (path, cmdline.decode(), _image_release(kernel.fileno()))

    def kexec_unload(self) -> None:
        with self._lock:
            self._image = None

    def kexec_loaded(self) -> bool:
        return self._image is not None

    def reboot_kexec(self) -> None:
        with self._lock:
            self._enter()
            if self._image is None:
                raise fail(errno.EINVAL)
            if self._reboot_fault:
                code, self._reboot_fault = self._reboot_fault, 0
                raise fail(code)  # a LUO freeze failure: rolled back, nothing serialized
            self._reap()
            self._serialize(self._image[1], self._image[0], self._image[2])
            image = self._image[0]
            self.close()
        raise SimulatedKexec(f"kexec into {image}")

    def close(self) -> None:
        """Power the simulated kernel off: release every fd it holds (pipes, file references).

        Session fds still held by callers become dead pipes; any further call raises
        SimulatedKexec.
        """
        with self._lock:
            self._gone = True
            for session in self._sessions.values():
                session.reader.close()
                for out in session.outgoing_files.values():
                    out.ref.close()
                for inc in session.incoming_files.values():
                    if inc.retrieved is not None:
                        inc.retrieved.close()
            self._sessions.clear()
            if self._device is not None:
                self._device[0].close()
                self._device = None
            self._readers.clear()
            self._epoll.close()

    def device_holders(self, path: str) -> list[Holder]:
        if self._device is None:
            return []
        return probes.device_holders(f"pipe:[{self._device[1][1]}]")

    def handover_blobs(self) -> HandoverBlobs:
        return _simabi.outgoing_blobs(
            self.kernel,
            self.cold_boot,
            self.liveupdate_enabled,
            self.liveupdate_number + 1,
            self.kexec_count,
        )

    def running_image(self) -> Path | None:
        return self.image

    def info(self) -> KernelInfo:
        return KernelInfo(
            release=self.kernel.release,
            device_present=self.liveupdate_enabled,
            cmdline=self.cmdline,
            liveupdate_param=bool(probes.cmdline_flag(self.cmdline, "liveupdate")),
            kho_enabled=probes.cmdline_flag(self.cmdline, "kho") is not False,
            liveupdate_number=self.liveupdate_number,
            previous_release=self.previous_release,
            kexec_count=self.kexec_count,
            boot_id=self.boot_id,
            version=self.kernel.version,
        )

    # --- test hooks ----------------------------------------------------------------------------
    def fail_next_retrieve(self, session: str, token: int, code: int = errno.ENOMEM) -> None:
        """Make the restore of (session, token) fail like a memcg charge failure (sticky)."""
        self._retrieve_faults[(session, token)] = code

    def fail_next_reboot(self, code: int = errno.EIO) -> None:
        """Make the next reboot(KEXEC) fail like a LUO freeze failure (docs/kernel.md §5.3 step 5):
        state rolled back, every session still preserved, a retry may succeed."""
        self._reboot_fault = code

    @property
    def poisoned(self) -> bool:
        """Whether a reboot now would hand over an empty trailing block (docs/kernel.md §4.4)."""
        return self._poisoned

    # --- internals -------------------------------------------------------------------------
    def _enter(self) -> None:
        if self._gone:
            raise SimulatedKexec("this simulated kernel has kexec'd; LUO calls would block")
        self._reap()

    def _deserialize(self) -> None:
        if self._deserialized is None:
            self._deserialized = 0
            for name, files in self._handover_files:
                handler = self.kernel.handlers.get("memfd")
                if any(f.record.compatible != handler for f in files):
                    self._deserialized = errno.EIO
                    break
                self._incoming[name] = files
        if self._deserialized:
            raise fail(self._deserialized)

    def _release_loop(self) -> None:
        """Release objects as soon as their last fd closes, as the kernel does, instead of at
        the next LUO call (a daemon's fd table then shows no stale simulator pipes)."""
        while not self._gone:
            try:
                ready = self._epoll.poll(0.2)
            except (ValueError, OSError):
                return  # closed by close()
            if ready:
                with self._lock:
                    if not self._gone:
                        self._reap()

    def _watch(self, reader: int, session: SimSession | None) -> None:
        self._readers[reader] = session
        self._epoll.register(reader, 0)

    def _reap(self) -> None:
        """Apply the release of every object whose last fd was closed since the last call."""
        for reader, _ in self._epoll.poll(0):
            session = self._readers.pop(reader)
            self._epoll.unregister(reader)
            if session is None:
                assert self._device is not None
                self._device[0].close()
                self._device = None
            else:
                self._release(session)

    def _release(self, session: SimSession) -> None:
        del self._sessions[session.key]
        session.reader.close()
        if session.incoming:
            self._finish(session)
            del self._retrieved[session.name]
        else:
            for file in session.outgoing_files.values():
                self._preserved.discard(file.ident)
                file.ref.close()
            del self._outgoing[session.name]
            self._poisoned = False

    def _new_session(self, name: str, incoming: bool) -> int:
        reader, writer = os.pipe2(os.O_CLOEXEC)
        session = SimSession(name, incoming, OwnedFd(reader), identity(writer))
        self._sessions[session.key] = session
        self._watch(reader, session)
        (self._retrieved if incoming else self._outgoing)[name] = session
        return writer

    # --- argument handling (docs/kernel.md §4.2) --------------------------------------------------
    def _device_ioctl(self, cmd: int, view: memoryview) -> None:
        nr = uapi.ioc_nr(cmd)
        if nr >= len(_DEVICE_NRS):
            raise fail(errno.EINVAL)
        arg = _copy_in(cmd, _DEVICE_NRS[nr], view)
        name = uapi.get_name(arg)
        arg.fd = self._create(name) if nr == 0 else self._retrieve_session(name)
        _copy_out(arg, view)

    def _session_ioctl(self, session: SimSession, cmd: int, view: memoryview) -> None:
        nr = uapi.ioc_nr(cmd)
        if nr not in _SESSION_CMDS:
            raise fail(errno.EINVAL)
        expected = _SESSION_CMDS[nr]
        _read_size(view)
        if cmd != expected:
            raise fail(errno.ENOTTY)
        needs_incoming = {0x40: False, 0x41: True, 0x42: True}.get(nr)
        if needs_incoming is not None and needs_incoming != session.incoming:
            raise fail(errno.EINVAL)
        arg = _copy_in(cmd, expected, view)
        if nr == 0x40:
            self._preserve(session, int(arg.fd), int(arg.token))
        elif nr == 0x41:
            arg.fd = self._retrieve_fd(session, int(arg.token))
        elif nr == 0x42:
            if arg.reserved:
                raise fail(errno.EINVAL)
            self._finish(session)
        else:
            if arg.reserved:
                raise fail(errno.EINVAL)
            uapi.set_name(arg, session.name.encode(errors="surrogateescape"))
        _copy_out(arg, view)

    # --- the operations ------------------------------------------------------------------------
    def _create(self, raw: bytes) -> int:
        if not raw or len(raw) >= uapi.NAME_LENGTH:
            raise fail(errno.EINVAL)
        name = raw.decode(errors="surrogateescape")
        count = len(self._outgoing)
        if count + 1 > SESSIONS_PER_BLOCK * MAX_BLOCKS:
            raise fail(errno.ENOSPC)
        if name in self._outgoing:
            if count and count % SESSIONS_PER_BLOCK == 0:
                self._poisoned = True  # the grown, empty block stays linked (docs/kernel.md §4.4)
            raise fail(errno.EEXIST)
        writer = self._new_session(name, incoming=False)
        self._poisoned = False
        return writer

    def _retrieve_session(self, raw: bytes) -> int:
        name = raw.decode(errors="surrogateescape")
        if name in self._retrieved:
            raise fail(errno.EINVAL)
        files = self._incoming.pop(name, None)
        if files is None:
            raise fail(errno.ENOENT)
        writer = self._new_session(name, incoming=True)
        self._retrieved[name].incoming_files = {f.record.token: f for f in files}
        return writer

    def _preserve(self, session: SimSession, fd: int, token: int) -> None:
        if token in session.outgoing_files:
            raise fail(errno.EEXIST)
        ident = check_preservable(fd)
        if ident in self._preserved:
            raise fail(errno.EBUSY)
        ref = OwnedFd(os.dup(fd))
        file = OutgoingFile(token, ref, ident, os.fstat(fd).st_size, memfd.get_seals(ref))
        session.outgoing_files[token] = file
        self._preserved.add(ident)

    def _retrieve_fd(self, session: SimSession, token: int) -> int:
        file = session.incoming_files.get(token)
        if session.finished or file is None:
            raise fail(errno.ENOENT)
        if file.error:
            raise fail(file.error)
        if file.retrieved is None:
            fault = self._retrieve_faults.pop((session.name, token), None)
            if fault:
                file.error, file.data = fault, None  # sticky, and the data is gone
                raise fail(fault)
            file.retrieved = restore_memfd(file.record, file.data)
            file.ident = identity(file.retrieved.fileno())
            self._preserved.add(file.ident)
        return os.dup(file.retrieved.fileno())

    def _finish(self, session: SimSession) -> None:
        if session.finished:
            return
        session.finished = True
        for file in reversed(session.incoming_files.values()):
            if file.retrieved is not None:
                assert file.ident is not None
                self._preserved.discard(file.ident)
                file.retrieved.close()
            file.data = None  # unretrieved files are destroyed
        session.incoming_files.clear()

    def _serialize(self, next_cmdline: str, image: str, next_release: str) -> None:
        staging = Path(tempfile.mkdtemp(prefix=".handover-", dir=self.state_dir))
        handover = _simdisk.Handover(
            liveupdate_num=self.liveupdate_number + 1,
            cmdline=next_cmdline,
            previous_release=self.kernel.release,
            kexec_count=self.kexec_count + 1,
            luo=self.liveupdate_enabled and self.kernel.luo is not None,
            poisoned=self._poisoned,
            kho_compatible=self.kernel.kho or "",
            luo_compatible=self.kernel.luo or "",
            image=image,
            release=next_release,
        )
        for index, session in enumerate(self._outgoing.values()):
            record = _simdisk.SessionRecord(session.name)
            for file in session.outgoing_files.values():
                data = f"s{index}-t{file.token}.bin"
                _simdisk.write_file(staging, data, file.ref.fileno(), file.size)
                pos = os.lseek(file.ref.fileno(), 0, os.SEEK_CUR)
                compatible = self.kernel.handlers.get("memfd", _simdisk.MEMFD_COMPATIBLE)
                saved = _simdisk.FileRecord(
                    file.token, file.size, pos, file.seals, data, compatible
                )
                record.files.append(saved)
            handover.sessions.append(record)
        _simdisk.save(self.state_dir, handover, staging)


def _image_release(fd: int) -> str:
    """The release an x86 bzImage boots (its header's version string up to the first space,
    as ``file`` shows it), or SIM_RELEASE for an image without one (the tests' stubs)."""
    pointer = int.from_bytes(os.pread(fd, 2, BZIMAGE_VERSION_POINTER), "little")
    if not pointer:
        return SIM_RELEASE
    text = os.pread(fd, 256, pointer + 0x200).split(b"\0")[0].split(b" ")[0]
    release = text.decode("ascii", "replace")
    return release if release.isprintable() and release else SIM_RELEASE


def _read_size(view: memoryview) -> int:
    if len(view) < 4:
        raise fail(errno.EFAULT)
    return int(struct.unpack_from("<I", view, 0)[0])


def _copy_in(cmd: int, expected: int, view: memoryview) -> uapi.Struct:
    """get_user(size), the command check, then copy_struct_from_user()."""
    size = _read_size(view)
    if cmd != expected:
        raise fail(errno.ENOTTY)
    ctype = uapi.STRUCT_OF[expected]
    sizeof = uapi.ffi.sizeof(ctype)
    if size < sizeof:
        raise fail(errno.EINVAL)
    if len(view) < size:
        raise fail(errno.EFAULT)
    if any(view[sizeof:size]):
        raise fail(errno.E2BIG)
    arg: uapi.Struct = uapi.ffi.new(ctype + " *")
    uapi.ffi.memmove(arg, bytes(view[:sizeof]), sizeof)
    return arg


def _copy_out(arg: uapi.Struct, view: memoryview) -> None:
    size = min(int(arg.size), len(uapi.ffi.buffer(arg)))
    view[:size] = bytes(uapi.ffi.buffer(arg))[:size]


def sim_backend(
    state_dir: Path,
    *,
    cmdline: str | None = None,
    device_path: str = DEFAULT_PATH,
    eager_release: bool = False,
    read_abi: _simabi.ReadAbi | None = None,
) -> Backend:
    kernel = SimKernel(state_dir, cmdline=cmdline, eager_release=eager_release, read_abi=read_abi)
    return Backend(kernel, device_path)
