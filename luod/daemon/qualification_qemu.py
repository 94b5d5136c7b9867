"""The QEMU canary of a qualification (issue 14 §1, ``--qemu-canary``): a real QEMU guest under
luod-qemu that hands over across each kexec of the chain like any VM, then is checked in each
next kernel: restored, its RAM intact (the magic; the pattern its boot code wrote, whose sha256
its boot stamp predicts), never reset (the same boot stamp) and running on (its in-RAM counter
went on from before the kexec and still rises).

The guest and its probe are luod.qemu.canary's (``python -m luod.qemu.canary``): luod runs them
as programs, as an operator runs luod-qemu, and talks to the canary VM only as its VMM socket's
peer. Its VM id is ``luodq-<qualification id>``: no operator VM shares that name. luod ends the
canary's luod-qemu once the step's VMMs are frozen (a real kexec would; the simulator's does
not) and, when the qualification ends, stops it (QEMU quits, luod-qemu drops the VM).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog

from luod.values import Value

if TYPE_CHECKING:  # the checks: imported by a qualification's first QEMU canary
    from luod.core import qualify

log = structlog.get_logger("luod.qualify")
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
QEMU = "qemu-system-x86_64"
PREFIX = "luodq-"
START_SECONDS = 300.0  # QEMU's start, SeaBIOS and the boot code (minutes under nested TCG)
STOP_SECONDS = 30.0  # QEMU's quit, luod-qemu's DROP
RUNS_ON_SECONDS = 1.2  # between two probes: the BIOS timer ticks 18.2 times a second


class _CanarySettings(NamedTuple):
    socket: Path  # luod's VMM socket
    directory: Path  # the floppy, luod-qemu's status and lock, its logs (survives the kexec)
    probe: Path  # the probe's QMP socket (a short path: in luod's runtime directory)
    runtime: Path  # luod-qemu's status and lock files, the probe's scratch (tmpfs)
    qemu: str = QEMU


class CanarySettings(Value, _CanarySettings):
    __slots__ = ()


class QemuCanary:
    """The canary guest's luod-qemu process in this boot, and its probes."""

    def __init__(self, settings: CanarySettings, spawn: Spawn) -> None:
        self.settings = settings
        self.spawn = spawn  # luod's task group: luod-qemu's output is read there
        self._process: asyncio.subprocess.Process | None = None
        self._seen: list[dict[str, Any]] = []  # luod-qemu's JSON lines, in order
        self._changed = asyncio.Event()
        self._said = ""  # luod-qemu's last error line

    def unavailable(self) -> str:
        """Why this host cannot run the canary ('' when it can)."""
        import shutil  # with bz2 and lzma: ~2 ms that luod's start does not need

        if shutil.which(self.settings.qemu) is None:
            return f"{self.settings.qemu} is not on luod's PATH"
        return ""

    @staticmethod
    def vm_id(qid: str) -> str:
        return f"{PREFIX}{qid}"

    # --- luod-qemu -----------------------------------------------------------------------------
    async def start(self, qid: str) -> list[qualify.Check]:
        """Boot the canary under luod-qemu; checks: it started and its RAM is preserved."""
        await self._launch("run", qid)
        return [await self._until("preserved", "qemu canary: started and preserved")]

    async def restore(self, qid: str) -> list[qualify.Check]:
        """After the kexec: luod-qemu restore (QEMU on the reclaimed RAM, the device state
        loaded, cont, DONE), until it is preserved again for the next step."""
        await self._launch("restore", qid)
        restored = await self._until("restored", "qemu canary: restored")
        if restored.result != "pass":
            return [restored]
        again = await self._until("preserved", "qemu canary: preserved again", after="restored")
        return [restored, again]

    async def _launch(self, command: str, qid: str) -> None:
        settings = self.settings
        settings.directory.mkdir(parents=True, exist_ok=True)
        settings.runtime.mkdir(parents=True, exist_ok=True)
        argv = ["--id", self.vm_id(qid), "--dir", str(settings.directory)]
        argv += ["--socket", str(settings.socket), "--runtime-dir", str(settings.runtime)]
        if command == "run":
            settings.probe.unlink(missing_ok=True)
            argv += ["--probe", str(settings.probe), "--qemu", settings.qemu]
        self._seen, self._said = [], ""
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "luod.qemu.canary", command, *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        log.info("qemu-canary-launched", command=command, pid=self._process.pid)
        self.spawn(self._read(self._process, command))

    async def _read(self, process: asyncio.subprocess.Process, command: str) -> None:
        """luod-qemu's output into its log file (beside the floppy), its events remembered."""
        try:
            await self._copy(process, self.settings.directory / f"{command}.log")
        except (OSError, ValueError) as exc:  # a full disk: the canary's checks say the rest
            log.warning("qemu-canary-output-lost", error=str(exc))
        await process.wait()
        self._changed.set()

    async def _copy(self, process: asyncio.subprocess.Process, path: Path) -> None:
        assert process.stdout is not None
        with path.open("ab") as out:
            async for line in process.stdout:
                out.write(line)
                out.flush()
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict) and "event" in event:
                    self._seen.append(event)
                elif line.startswith(b"luod-qemu: "):  # its error, said once on stderr
                    self._said = line.decode(errors="replace").strip()
                self._changed.set()

    async def _until(self, event: str, name: str, after: str = "") -> qualify.Check:
        """A check: luod-qemu said ``event`` (after ``after``), or why not."""
        from luod.core import qualify

        try:
            async with asyncio.timeout(START_SECONDS):
                while (found := self._found(event, after)) is None:
                    if self._process is None or self._process.returncode is not None:
                        return qualify.check(name, "yes", f"no: {self._why()}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return qualify.check(name, "yes", f"no: not within {START_SECONDS:.0f} s")
        return qualify.check(name, "yes", "yes" if found else "no")

    def _found(self, event: str, after: str) -> dict[str, Any] | None:
        names = [e["event"] for e in self._seen]
        start = names.index(after) + 1 if after in names else (0 if not after else len(names))
        return next((e for e in self._seen[start:] if e["event"] == event), None)

    def _why(self) -> str:
        failed = [e for e in self._seen if str(e["event"]).endswith("-failed")]
        if failed:
            last = failed[-1]
            return f"{last['event']} {last.get('code')}: {last.get('error')} ({last.get('hint')})"
        code = self._process.returncode if self._process else None
        said = f": {self._said[:400]}" if self._said else ""
        return f"luod-qemu exited with status {code}{said} (see {self.settings.directory}/*.log)"

    async def stop(self, qid: str, forget: Callable[[], None]) -> None:
        """The qualification ended: luod-qemu stops the canary (QEMU quits, the VM is
        dropped); then ``forget`` drops what a luod-qemu that failed left registered. A
        luod-qemu this luod did not launch (a killed luod's) is stopped too."""
        self.end()
        if self._process is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_SECONDS):
                    await self._process.wait()
        else:
            await asyncio.to_thread(self._stop_orphan, self.vm_id(qid))
        forget()

    def _stop_orphan(self, vm_id: str) -> None:
        """A luod killed during a step left its canary's luod-qemu running, as any VMM
        outlives luod: SIGTERM (QEMU quits), SIGKILL after STOP_SECONDS. Found by the status
        file luod-qemu keeps (RUNTIME/VM.json), and only if that pid still runs it."""
        import psutil  # here only: luod's start need not import it

        try:
            status = json.loads((self.settings.runtime / f"{vm_id}.json").read_text())
            process = psutil.Process(int(status["supervisor_pid"]))
            if vm_id not in process.cmdline():
                return  # that pid is another process now
            process.terminate()
            try:
                process.wait(STOP_SECONDS)
            except psutil.TimeoutExpired:
                process.kill()
            log.info("qemu-canary-orphan-stopped", vm=vm_id, pid=process.pid)
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return

    def end(self) -> None:
        """SIGTERM to luod-qemu: frozen, it kills QEMU and keeps what luod holds (the kexec
        comes); running, QEMU quits and luod-qemu drops the VM (the qualification ended)."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)

    # --- the probe -----------------------------------------------------------------------------
    async def running_probes(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Two probes of the guest's RAM RUNS_ON_SECONDS apart, over its probe QMP socket,
        once its boot code has run (counter, stamp, magic, fill_sha256; or an error)."""
        done = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "luod.qemu.canary", "probe", "--twice", str(RUNS_ON_SECONDS),
            "--probe", str(self.settings.probe), "--dir", str(self.settings.runtime),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await done.communicate()
        try:
            seen = json.loads(out)
        except ValueError:
            seen = {"error": f"the probe printed {out[:200]!r}"}
        if isinstance(seen, list) and len(seen) == 2:
            return seen[0], seen[1]
        return seen, seen
