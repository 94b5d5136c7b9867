"""The systemd-262 guest: a Debian sid root file system with systemd as PID 1 on the LUO kernel.

``rootfs()`` builds it with mmdebstrap (``build-rootfs``) once per set of inputs and caches it
under ``build/systemd-guest/`` (gitignored); with the project's .deb (``make deb``) mmdebstrap
installs it too, its dependencies resolved by apt, its maintainer scripts run.

``run()`` boots it under QEMU/TCG: the rootfs read-only over 9p, a writable share with
``init``, ``driver``, the units and one ``stage-N`` script per boot (run by
``sdg-driver.service``), and, without a .deb, luod's source tree (byte-compiled) read-only.
Results come back as ``tests.vm.qemu.GuestResult`` (same share layout as the busybox guest).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.vm.qemu import (
    GuestResult,
    collect,
    env_file_text,
    kernel_cmdline,
    machine_command,
    make_run_dir,
    p9_share,
    run_qemu,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CACHE = REPO / "build" / "systemd-guest"
BUILD_INPUTS = ("build-rootfs", "packages", "boot")
SHARED_FILES = ("init", "driver", "lib.sh")
COMPLETE = ".sdg-complete"


@dataclass(frozen=True)
class Rootfs:
    path: Path
    build_seconds: float  # 0.0: taken from the cache
    deb: Path | None


def rootfs(deb: Path | None = None) -> Rootfs:
    """The guest's root directory, cached by the builder's inputs (and the .deb's bytes)."""
    started = time.monotonic()
    kind = "src" if deb is None else "deb"
    path = _cached(CACHE / f"rootfs-{kind}-{_inputs_key(deb)}", _build(kind, deb))
    return Rootfs(path, round(time.monotonic() - started, 1), deb)


def _inputs_key(deb: Path | None) -> str:
    digest = hashlib.sha256()
    for name in BUILD_INPUTS:
        digest.update(name.encode() + b"\0" + (HERE / name).read_bytes())
    if deb is not None:
        digest.update(deb.read_bytes())
    return digest.hexdigest()[:16]


def _cached(path: Path, build: Callable[[Path], None]) -> Path:
    """``path``, built by ``build`` into a temporary directory first unless complete."""
    if (path / COMPLETE).exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        build(partial)
        (partial / COMPLETE).touch()
        os.rename(partial, path)  # another run may have won: then keep theirs
    except OSError:
        if not (path / COMPLETE).exists():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return path


def _forget(prefix: str) -> None:
    for old in CACHE.glob(f"{prefix}*"):
        if ".partial-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)


def _build(kind: str, deb: Path | None) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        _forget(f"rootfs-{kind}-")  # 300 MB each: keep the current inputs' one only
        args = [str(HERE / "build-rootfs"), str(out)] + ([str(deb.resolve())] if deb else [])
        _run(args, out.with_suffix(".log"))

    return build


def _run(command: list[str], log: Path) -> None:
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{command[0]} failed ({done.returncode}), see {log}:\n{tail}")


def source_tree(root: Rootfs) -> Path:
    """luod's package and units, byte-compiled by the guest's own python3 (no __pycache__ in
    the read-only share would mean compiling every module at every start under TCG)."""
    digest = hashlib.sha256(root.path.name.encode())
    files = sorted(p for d in ("luod", "systemd") for p in (REPO / d).rglob("*") if _source(p))
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return _cached(CACHE / f"src-{digest.hexdigest()[:16]}", _compiled(root.path, files))


def _source(path: Path) -> bool:
    return path.is_file() and "__pycache__" not in path.parts


def _compiled(root: Path, files: list[Path]) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        _forget("src-")
        for path in files:
            target = out / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        compile_all = f"chroot {root} python3 -m compileall -q /mnt/luod"
        script = f"mount --bind {out} {root}/mnt && exec {compile_all}"
        _run(["unshare", "--mount", "sh", "-c", script], out.with_suffix(".log"))

    return build


def luod_deb() -> Path | None:
    """The project's .deb: ``$LUOD_DEB``, else ``make deb`` (its last output line is the path)
    when the Makefile has that target; None (luod from the source tree) without a deb target
    or with ``LUOD_SDG_FROM_SOURCE=1`` (quicker while editing luod: no package build)."""
    if os.environ.get("LUOD_SDG_FROM_SOURCE") == "1":
        return None
    if os.environ.get("LUOD_DEB"):
        return Path(os.environ["LUOD_DEB"])
    if "\ndeb:" not in (REPO / "Makefile").read_text():
        return None
    done = subprocess.run(
        ["make", "-s", "deb"], cwd=REPO, capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        raise RuntimeError(f"make deb failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Path(lines[-1])


def qemu_command(kernel: Path, root: Path, share: Path, source: Path, memory: str) -> list[str]:
    return [
        *machine_command(kernel, kernel_cmdline(root="rootfs", init="/sbin/sdg-boot"), memory),
        *p9_share(str(root), "rootfs", readonly=True),
        *p9_share(str(share), "share", readonly=False),
        *p9_share(str(source), "luodsrc", readonly=True),
    ]


def run(
    stages: Sequence[str],
    *,
    kernel: Path,
    root: Rootfs,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    files: Mapping[str, str] | None = None,
    timeout: float = 300,
    memory: str = "2G",
) -> GuestResult:
    """Boot the guest; ``stages[N-1]`` runs (sh -eu) on boot N; ``files`` go onto the share
    (relative paths: ``etc/...`` is copied into the guest's /etc, ``enable-N`` lists units
    boot N enables, ``vmm-ID.env`` configures a demo VMM unit)."""
    run_dir = make_run_dir(workdir)
    share = run_dir / "share"
    (share / "units").mkdir(parents=True)
    for name in SHARED_FILES:
        shutil.copy(HERE / name, share / name)
    for unit in (HERE / "units").iterdir():
        shutil.copy(unit, share / "units" / unit.name)
    shutil.copy(kernel, share / "bzImage")
    for number, text in enumerate(stages, start=1):
        (share / f"stage-{number}").write_text(text)
    for name, text in (files or {}).items():
        (share / name).parent.mkdir(parents=True, exist_ok=True)
        (share / name).write_text(text)
    (share / "env").write_text(
        env_file_text({"NEXT_KERNEL": "/run/sdg-share/bzImage", **(env or {})})
    )
    source = source_tree(root) if root.deb is None else REPO
    command = qemu_command(kernel, root.path, share, source, memory)
    (run_dir / "qemu-command").write_text(" ".join(command) + "\n")
    qemu = run_qemu(command, run_dir / "console.log", timeout)
    return collect(run_dir, len(stages), qemu)
