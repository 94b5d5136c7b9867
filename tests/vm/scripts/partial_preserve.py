"""A PRESERVE that fails partway, on the real kernel (issue 13, finding 8).

``hand SOCKET OUT``, before the kexec: VM ``vm-p`` sends a memfd plus an O_PATH fd (refused
before anything is preserved: ``bad-fd``), then the same memfd plus a pipe named ``vfio``
(only the kernel can refuse it: ``ram0`` stays preserved and on record), then sends ``dev0``
again as a memfd holding the device's state (the rest of the request, as the error's hint
says; a VM with a refused file would fail the update's preflight), and writes what luod
answered to OUT as JSON. ``reclaim SOCKET OUT``, after it: reclaims ``vm-p``, reads ram0 back
and sends DONE.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from luod.errors import LuodError
from luod.kernel import memfd
from luod.vmm.client import Client

VM = "vm-p"
CONTENT = b"partial preserve survives"
DEVICE = b"device state, sent again"


def error_of(call: Any) -> dict[str, Any]:
    try:
        call()
    except LuodError as exc:
        return {"code": exc.code, "message": exc.message, "errno": exc.errno}
    return {"code": None}


def hand(client: Client) -> dict[str, Any]:
    client.register(VM)
    with memfd.create("ram0", 4096) as ram:
        os.pwrite(ram.fileno(), CONTENT, 0)
        path_only = os.open(f"/proc/self/fd/{ram.fileno()}", os.O_PATH | os.O_CLOEXEC)
        o_path = error_of(lambda: client.preserve(VM, {"ram0": ram, "ram1": path_only}))
        os.close(path_only)
        after_o_path = client.list(VM)[0]["files"]
        reader, writer = os.pipe()
        vfio = error_of(lambda: client.preserve(VM, {"ram0": ram, "dev0": (reader, "vfio")}))
        os.close(reader)
        os.close(writer)
    with memfd.create("dev0", 4096) as state:
        os.pwrite(state.fileno(), DEVICE, 0)
        client.preserve(VM, {"dev0": state})
    files = [f["name"] for f in client.list(VM)[0]["files"]]
    return {"o_path": o_path, "after_o_path": after_o_path, "vfio": vfio, "files": files}


def reclaim(client: Client) -> dict[str, Any]:
    fds = client.reclaim(VM)
    content = {
        name: os.pread(fd.fileno(), 64, 0).rstrip(b"\0").decode() for name, fd in fds.items()
    }
    for fd in fds.values():
        fd.close()
    client.done(VM)
    return {"content": content}


def main() -> None:
    mode, socket_path, out = sys.argv[1:4]
    with Client(socket_path) as client:
        result = hand(client) if mode == "hand" else reclaim(client)
    with open(out, "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
