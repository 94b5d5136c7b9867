"""The .deb: built by packaging/build-deb (debhelper + dh-python/pybuild in a Debian sid build
root), installed by path into a fresh sid root (mmdebstrap minbase), and looked at there.

Needs root (mmdebstrap --mode=root, chroot) and the Debian mirror. The .deb is reused when the
sources did not change since the last build (packaging/build-deb's stamp); the fresh root is
made on every run (about 40 s).
"""

from __future__ import annotations

import gzip
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import luod

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mmdebstrap --mode=root, chroot"),
]

REPO = Path(__file__).resolve().parents[2]
VERSION = luod.__version__
SUITE = "sid"
MIRROR = "http://deb.debian.org/debian"
# sid's InRelease can be past Valid-Until relative to this machine's clock.
APT_OPTS = (
    '--aptopt=Acquire::Check-Valid-Until "false"',
    '--aptopt=Acquire::Check-Date "false"',
)
UNITS = ("luod.service", "luod.socket", "luod-api.socket", "luod-ready.target")
UNIT_DIR = "usr/lib/systemd/system"
# In a private mount namespace, so /proc and /tmp vanish with the command.
IN_ROOT = 'r=$1; shift; mount -t proc proc "$r/proc"; mount -t tmpfs tmpfs "$r/tmp"; '
IN_ROOT += 'exec chroot "$r" "$@"'


@pytest.fixture(scope="module")
def deb() -> Path:
    done = subprocess.run(
        [REPO / "packaging/build-deb"], capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-5000:]
    path = Path(done.stdout.splitlines()[-1])
    assert path.is_file() and path.name == f"luod_{VERSION}_all.deb"
    return path


@pytest.fixture(scope="module")
def root(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    target = tmp_path_factory.mktemp("sid") / "root"
    argv = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory", *APT_OPTS]
    argv += ["--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount", f"--include={deb}"]
    argv += [SUITE, str(target), f"deb {MIRROR} {SUITE} main"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-5000:]
    yield target
    _remove_root(target)


def _remove_root(target: Path) -> None:
    """250 MB per run: removed, unless something is still mounted in it (then rm would reach
    through the mount, e.g. into the bind-mounted .deb)."""
    if str(target) in Path("/proc/self/mountinfo").read_text():
        return
    subprocess.run(["rm", "-rf", "--one-file-system", str(target)], check=True)


def in_root(root: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec", IN_ROOT]
    return subprocess.run(
        [*command, "_", str(root), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_luod_reports_its_version(root: Path) -> None:
    done = in_root(root, "luod", "--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"luod {VERSION}"), done.stderr


def test_luoctl_help_lists_its_commands(root: Path) -> None:
    done = in_root(root, "luoctl", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: luoctl")
    for command in ("status", "preflight", "update", "history", "completion"):
        assert f"\n    {command} " in done.stdout, command


def test_the_installed_luod_serves_luoctl(root: Path) -> None:
    """On the simulator: the REST stack and every import resolve from sid's python3 packages,
    i.e. the package's Depends are complete."""
    script = (
        "luod --simulate /tmp/sim 2>/tmp/luod.log & pid=$!; "
        "for _ in $(seq 100); do [ -S /tmp/sim/run/api.sock ] && break; sleep 0.1; done; "
        "rc=0; luoctl --socket /tmp/sim/run/api.sock status || rc=$?; "
        "kill $pid 2>/dev/null; wait $pid || true; "
        "[ $rc = 0 ] || tail -20 /tmp/luod.log >&2; exit $rc"
    )
    done = in_root(root, "sh", "-c", script)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "phase     idle" in done.stdout
    assert f"luod      {VERSION} (backend sim)" in done.stdout


def test_dpkg_lists_commands_and_package_and_they_exist(root: Path) -> None:
    done = in_root(root, "dpkg", "-L", "luod")
    assert done.returncode == 0, done.stderr
    listed = set(done.stdout.split())
    for path in (
        "/usr/bin/luod",
        "/usr/bin/luoctl",
        "/usr/bin/luod-demo-vmm",
        "/usr/bin/luod-qemu",
    ):
        assert path in listed
    assert "/usr/lib/python3/dist-packages/luod/kernel/_uapi_cffi.py" in listed
    missing = [p for p in listed if not os.path.lexists(root / p.lstrip("/"))]
    assert not missing


def test_units_are_installed_verified_and_only_the_sockets_enabled(root: Path) -> None:
    for unit in UNITS:
        assert (root / UNIT_DIR / unit).read_text() == (REPO / "systemd" / unit).read_text()
    paths = [f"/{UNIT_DIR}/{unit}" for unit in UNITS]
    done = in_root(root, "systemd-analyze", "verify", "--man=no", *paths)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    done = in_root(root, "systemctl", "is-enabled", *UNITS)
    states = dict(zip(UNITS, done.stdout.split(), strict=True))
    assert states == {
        "luod.service": "disabled",  # socket-activated, or pulled in by luod-ready.target
        "luod.socket": "enabled",
        "luod-api.socket": "enabled",
        "luod-ready.target": "static",
    }


def test_the_qemu_vm_template_unit_is_installed(root: Path) -> None:
    unit = "luod-qemu@.service"
    assert (root / UNIT_DIR / unit).read_text() == (REPO / "systemd" / unit).read_text()


def test_sysusers_made_the_luod_group(root: Path) -> None:
    conf = root / "usr/lib/sysusers.d/luod.conf"
    assert conf.read_text() == (REPO / "systemd/luod.sysusers").read_text()
    assert in_root(root, "getent", "group", "luod").stdout.startswith("luod:x:")
    done = in_root(root, "systemd-sysusers", "luod.conf")  # again: nothing left to do
    assert done.returncode == 0, done.stderr


def test_tmpfiles_made_the_state_directory(root: Path) -> None:
    conf = root / "usr/lib/tmpfiles.d/luod.conf"
    assert conf.read_text() == (REPO / "systemd/luod.tmpfiles").read_text()
    group = in_root(root, "getent", "group", "luod").stdout.split(":")
    state = (root / "var/lib/luod").stat()
    assert (oct(state.st_mode & 0o7777), state.st_uid, state.st_gid) == ("0o750", 0, int(group[2]))


def test_the_default_config_is_a_conffile_that_validates(root: Path) -> None:
    config = root / "etc/luod/luod.toml"
    assert config.read_text() == (REPO / "packaging/luod.toml").read_text()
    done = in_root(root, "dpkg-query", "-W", "-f=${Conffiles}", "luod")
    assert done.stdout.split()[0] == "/etc/luod/luod.toml"
    done = in_root(root, "luod", "--check-config")
    assert done.returncode == 0, done.stderr


def test_man_pages_come_from_help(root: Path) -> None:
    pages = {"man8/luod.8.gz": "--check-config", "man1/luoctl.1.gz": "completion"}
    pages["man1/luod-demo-vmm.1.gz"] = "reclaim"
    pages["man1/luod-qemu.1.gz"] = "restore"
    for page, option in pages.items():
        text = gzip.decompress((root / "usr/share/man" / page).read_bytes()).decode()
        name = Path(page).name.split(".")[0]
        assert text.count(f'.TH {name.upper()} "') == 1, page
        assert option.replace("-", "\\-") in text, page


def test_every_luoctl_command_has_its_man_page(root: Path) -> None:
    """The pages make man generates from luoctl's parser (man/), one per command."""
    repo = Path(__file__).resolve().parents[2] / "man"
    for page in sorted(repo.glob("luoctl-*.1")):
        installed = root / "usr/share/man/man1" / f"{page.name}.gz"
        text = gzip.decompress(installed.read_bytes()).decode()
        assert text.splitlines()[:2] == page.read_text().splitlines()[:2], page.name


def test_luoctl_has_shell_completion(root: Path) -> None:
    bash = (root / "usr/share/bash-completion/completions/luoctl").read_text()
    assert "complete " in bash and "luoctl" in bash
    assert (root / "usr/share/zsh/vendor-completions/_luoctl").read_text().startswith("#compdef")


def test_lintian_reports_no_errors(deb: Path) -> None:
    """packaging/build-deb runs sid's lintian (--pedantic --info) next to the build."""
    tags = (deb.parent / "luod.lintian").read_text().splitlines()
    errors = [tag for tag in tags if tag.startswith("E:")]
    assert not errors, "\n".join(tags)
