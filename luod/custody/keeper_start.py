"""Starting the fd keeper (``python -m luod.custody.keeper --socket PATH``): its starter forks the
keeper's daemon and exits once that listens (``EXIT_READY``), or at once when another keeper
already listens there (``EXIT_BUSY``).

``KeeperStart.begin`` only spawns the starter; ``finish`` waits for its word. So luod's command
(luod.start) can begin it before luod's own imports and connect after them: after a kexec the
keeper is gone with the old kernel, and its start (an interpreter and its imports: 33 ms on a
host, 0.7-0.9 s in the TCG test guest) then runs beside luod's instead of after them
(bench/NOTES.md, "Start-up"). Only what spawning needs is imported here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

from luod.childenv import child_env
from luod.custody.keeper import EXIT_BUSY, EXIT_READY
from luod.errors import LuodError

CLOSE_WAIT: Final = 10.0
"""``close`` lets the starter finish: killed, it would break the pipe its keeper reports on."""
KEEPER_FLAGS: Final = ("-S",)
"""The keeper runs without ``site``: it imports the standard library and luod alone (found on
the PYTHONPATH given here), and processing site-packages' .pth files was a fifth of its start in
the TCG test guest (0.83 -> 0.65 s, median of 7, bench/NOTES.md "Start-up")."""


class KeeperStart:
    """One run of the keeper's starter: spawned by ``begin``, reaped by ``finish`` or ``close``
    (which owns the process and its stderr pipe)."""

    def __init__(self, path: Path, process: subprocess.Popen[bytes]) -> None:
        self.path = path
        self._process: subprocess.Popen[bytes] | None = process

    @classmethod
    def begin(cls, path: Path) -> KeeperStart:
        """Spawn the starter for a keeper at ``path``; raises ``custody-unavailable`` when it
        cannot run at all."""
        env = child_env()
        command = [
            sys.executable,
            *KEEPER_FLAGS,
            "-m",
            "luod.custody.keeper",
            "--socket",
            str(path),
        ]
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env=env,
            )  # fmt: skip
        except OSError as exc:
            raise LuodError("custody-unavailable", f"could not start the fd keeper: {exc}") from exc
        return cls(path, process)

    def finish(self, timeout: float) -> None:
        """Wait until the keeper listens (or another one did); raises ``custody-unavailable``
        with the starter's words when it did not start, or did not say within ``timeout``."""
        process = self._process
        if process is None:
            return
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.close()
            raise LuodError("custody-unavailable", f"could not start the fd keeper: {exc}") from exc
        self._process = None
        if process.returncode not in (EXIT_READY, EXIT_BUSY):
            raise LuodError(
                "custody-unavailable",
                f"the fd keeper did not start (exit {process.returncode}): "
                f"{stderr.decode(errors='replace').strip()}",
                hint=f"check that {self.path.parent} exists and is writable by luod's user",
            )

    def close(self) -> None:
        """Reap the starter when luod will not ask for its word (it stopped before choosing
        its custody): a keeper it started holds nothing and exits when idle."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.communicate(timeout=CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def start_keeper(path: Path, timeout: float) -> None:
    """Run the keeper's starter and wait for its word."""
    KeeperStart.begin(path).finish(timeout)
