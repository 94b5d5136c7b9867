"""What luod's start-up and a VMM's client library leave out (issue 17 §2): each is imported in
a fresh interpreter and the modules it loaded are checked, so a new top-level import of a heavy
module on the path to the first RECLAIM fails here, deterministically, without any timing."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest

AFTER_FIRST_RECLAIM = (
    "rich",  # structlog's tracebacks pull it in unless luod.lean hides it
    "structlog.dev",  # the console renderer: luod logs JSON with structlog's core alone
    "structlog.stdlib",  # (luod.lean_structlog); the rest of structlog comes once asked for
    "structlog.threadlocal",
    "structlog.testing",
    "uuid",  # with platform: update ids are os.urandom's (luod.core.timeline.new_id)
    "platform",
    "psutil",  # only the EBUSY diagnosis lists /dev/liveupdate's holders
    "pydantic",  # the REST stack: imported once the VMM socket serves
    "fastapi",
    "uvicorn",
    "pyroute2",  # a VM's NICs rebuilt, an update's prepare (the uplink watch reads sysfs)
    "luod.rest.app",
    "luod.core.compat",  # the handover-ABI readers: the first update's preflight
    "luod.core.bzimage",
    "luod.custody.keeper_client",  # custody by the keeper: hosts without systemd, chosen at start
    "luod.core.nic",  # a VM's NICs (9 dataclasses): when a VMM declares them or a manifest has them
    "luod.core.nic_fields",
    "luod.core.preflight",  # an update's preflight
    "luod.core.qualify",  # a qualification's canaries and checks
    "luod.daemon.qualification_chain",
    "luod.daemon.qualification_canaries",
    "shutil",  # with bz2 and lzma: the QEMU canary's availability check
    "ctypes",  # nowhere: malloc_trim goes through the kernel layer's cffi libc
    "ssl",  # asyncio's TLS: linked once the REST stack imports (luod.lean)
    "argparse",  # only for a command line with arguments (luod.service gives none)
    "secrets",  # with hmac and random: statedir's temporary names use os.urandom
    "luod.kernel.images",  # the image readers: an update's (and the simulator's, not a host's)
)
NOT_FOR_A_VMM = (
    "luod.kernel.backend",
    "luod.kernel.probes",
    "luod.kernel.kexec",
    "luod.kernel.platform",
    "psutil",
    "structlog",
    "asyncio",  # the blocking Client: AsyncClient (luod.vmm.async_client) loads on first use
    "ssl",  # which asyncio would pull in
    "luod.vmm.async_client",
    "luod.vmm.async_transport",
    "luod.vmm.codec",  # the request types are luod's side; the client frames with luod.vmm.framing
    "dataclasses",  # with inspect, ast, dis: the client's values are NamedTuples
    "inspect",
    "luod.core.model",  # luod's model: the client names the capabilities (luod.core.capabilities)
    "luod.core.dialect",
)


@functools.cache
def loaded_by(module: str) -> frozenset[str]:
    return loaded_after(f"import {module}")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter (this one's), its output captured; it must succeed."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )


def loaded_after(statements: str) -> frozenset[str]:
    """The modules a fresh interpreter holds after running ``statements``."""
    code = f"import json, sys; {statements}; print(json.dumps(sorted(sys.modules)))"
    done = run_python(code)
    return frozenset(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("heavy", AFTER_FIRST_RECLAIM)
def test_the_luod_command_does_not_import_before_serving(heavy: str) -> None:
    assert heavy not in loaded_by("luod.main")


BEFORE_LUODS_IMPORTS = ("structlog", "asyncio", "ssl", "rich", "argparse", "luod.daemon.daemon")
"""luod.start resolves the settings and begins the keeper's start before it imports luod.main:
none of these may load then (structlog and asyncio must come through luod.lean, first)."""


def test_what_the_luod_command_decides_before_its_imports_loads_none_of_them() -> None:
    loaded = loaded_after(
        "import luod.start, luod.custody.keeper_start, luod.core.statedir;"
        "from luod.daemon.command_line import resolve; from luod.custody import choose;"
        "resolved = resolve([]); assert choose.chosen_kind(resolved.settings.custody)"
    )
    assert "luod.daemon.command_line" in loaded and "subprocess" in loaded
    assert not loaded & set(BEFORE_LUODS_IMPORTS), loaded & set(BEFORE_LUODS_IMPORTS)


@pytest.mark.parametrize("vmm", ["luod.vmm.client", "luod.qemu.cli", "luod.demo.vmm"])
def test_a_vmm_does_not_import_the_kernel_backend(vmm: str) -> None:
    """The client library and the shipped VMMs (luod-qemu; the demo VMM loads the backend
    only when it delegates): each starts again right after a kexec."""
    loaded = loaded_by(vmm)
    assert "luod.kernel.fd" in loaded  # OwnedFd, which it does use
    assert not loaded & set(NOT_FOR_A_VMM), loaded & set(NOT_FOR_A_VMM)


def test_the_vmm_start_gate_imports_only_the_smallest_modules() -> None:
    """It runs before a VMM's own imports (luod.vmm.start_gate): the part of the start it gates."""
    new = loaded_by("luod.vmm.start_gate") - loaded_after("pass")
    assert new <= {"luod", "luod.vmm", "luod.vmm.start_gate", "fcntl", "__future__"}, new


def test_structlog_still_works_without_rich() -> None:
    code = (
        "import luod.main, structlog, sys; from luod.daemon import logs; logs.configure();"
        "structlog.get_logger('t').info('hello', n=1); import rich; print('rich ok')"
    )
    done = run_python(code)
    assert '"event": "hello"' in done.stderr and '"n": 1' in done.stderr
    assert "rich ok" in done.stdout  # hidden only while structlog was imported


def test_the_asyncio_client_still_comes_from_the_client_module() -> None:
    code = (
        "import luod.vmm.client as c, sys; assert 'asyncio' not in sys.modules;"
        "from luod.vmm.client import AsyncClient; from luod.vmm import async_client;"
        "assert AsyncClient is async_client.AsyncClient and 'asyncio' in sys.modules;"
        "print('ok')"
    )
    done = run_python(code)
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("heavy", ["argparse", "dataclasses", "inspect"])
def test_the_keeper_starts_without_argparse_or_dataclasses(heavy: str) -> None:
    """After every kexec of a host without systemd's fd store luod starts a keeper, and waits
    for it: argparse and dataclasses (with inspect) were 15 of its 27 ms of imports."""
    assert heavy not in loaded_by("luod.custody.keeper")


@pytest.mark.parametrize(
    "heavy", ["_cffi_backend", "luod.kernel.uapi", "luod.kernel.session", "asyncio", "structlog"]
)
def test_the_kept_retrieve_helper_stays_small(heavy: str) -> None:
    """luod starts it at the first RECLAIM from another cgroup, and forks for each such RECLAIM
    until it is up: its start is counted in forks of luod (luod.kernel.retriever)."""
    assert heavy not in loaded_by("luod.kernel.retriever_helper")


def test_the_keeper_reads_luods_command_line_as_argparse_would() -> None:
    from pathlib import Path

    from luod.custody import keeper

    assert keeper.parse_args(["--socket", "/run/luod/keeper.sock"]) == keeper.Args(
        Path("/run/luod/keeper.sock"), keeper.IDLE_EXIT, False
    )
    debugging = keeper.parse_args(["--socket", "k.sock", "--foreground", "--idle-exit", "3"])
    assert debugging == keeper.Args(Path("k.sock"), 3.0, True)
    with pytest.raises(SystemExit) as refused:  # argparse's usage error, exit 2
        keeper.parse_args(["--socket"])
    assert refused.value.code == 2


VALUES = (
    "luod.vmm.codec.Reclaim",  # the codec makes no dataclass at all (below)
    "luod.kernel.probes.KernelInfo",
    "luod.kernel.probes.Holder",
    "luod.kernel.probes.Roots",
    "luod.core.access.Peer",
    "luod.core.clock.Stamp",
    "luod.core.kexec_mode.SystemdFacts",
    "luod.core.kexec_mode.KexecPlan",
    "luod.core.limits.Limits",
    "luod.core.orchestrator.Transition",
    "luod.core.running.Interrupted",
    "luod.daemon.config.Setting",
    "luod.daemon.connections.Liveness",
    "luod.daemon.settings.ApiSettings",
    "luod.core.model.FileSpec",
    "luod.core.model.Owner",
    "luod.daemon.kexec_step.KexecSettings",
    "luod.daemon.settings.Settings",
    "luod.core.access.AccessPolicy",
    "luod.core.custody_guard.CustodyHealth",
    "luod.core.dialect.Step",
    "luod.daemon.update.UpdateRequest",
    "luod.daemon.qualification_qemu.CanarySettings",
)
"""Immutable values on the path to the first RECLAIM, made as NamedTuples with
luod.values.Value first: Python 3.11's dataclasses compile each generated method with its own
exec (0.35-0.5 ms a frozen class), and these were about 20 ms of luod's start on a host."""


def test_luods_values_are_not_made_as_dataclasses_at_its_start() -> None:
    code = (
        "import dataclasses, json, sys; made = []; process = dataclasses._process_class\n"
        "def spy(cls, *args):\n"
        "    made.append(f'{cls.__module__}.{cls.__qualname__}'); return process(cls, *args)\n"
        "dataclasses._process_class = spy; import luod.main; print(json.dumps(made))"
    )
    done = run_python(code)
    made = set(json.loads(done.stdout.splitlines()[-1]))
    assert "luod.core.model.VmRecord" in made  # the spy sees luod's (mutable) dataclasses
    assert not made & set(VALUES), made & set(VALUES)
    assert not any(name.startswith("luod.vmm.codec.") for name in made)


@pytest.mark.parametrize("name", VALUES)
def test_each_value_compares_within_its_own_class_only(name: str) -> None:
    import importlib

    from luod.values import Value

    module, _, qualname = name.rpartition(".")
    kind = getattr(importlib.import_module(module), qualname)
    assert issubclass(kind, Value) and issubclass(kind, tuple)
    assert kind.__mro__.index(Value) < kind.__mro__.index(tuple)  # its __eq__ comes first
