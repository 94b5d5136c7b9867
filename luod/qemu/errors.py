"""The one exception luod-qemu raises: a code an operator can look up, what happened, what to do.

The codes: ``qmp-timeout``, ``qmp-closed``, ``qmp-error`` (QEMU's monitor),
``qemu-start-failed``, ``migration-failed`` (the device state), ``no-state`` (nothing to restore
from), ``bad-spec`` (the preserved VM description), ``bad-argument``, ``vm-busy`` (another
luod-qemu supervises the VM), ``luod-unavailable`` (luod did not come back after a restart).
"""

from __future__ import annotations


class QemuAdapterError(Exception):
    """What went wrong (``code``, ``message``) and what the operator can do (``hint``)."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.hint = hint

    def describe(self) -> str:
        return f"{self}" + (f" (hint: {self.hint})" if self.hint else "")
