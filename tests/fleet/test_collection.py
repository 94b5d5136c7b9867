"""The collection as a package: it builds with ansible-galaxy, ansible-test's sanity tests pass
on it, ansible-lint passes on its role and playbooks."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from tests.fleet.harness import COLLECTIONS, PYTHON, ansible_env

COLLECTION = COLLECTIONS / "ansible_collections" / "luod" / "liveupdate"
BIN = Path(PYTHON).parent
SANITY_HOME = Path.home() / ".cache" / "luod" / "ansible-test-home"
GET_PIP = Path(__file__).resolve().parent / "sanity" / "get_pip.py"
PIP_BOOTSTRAP = "24.2"  # ansible-test 2.19's pip for its sanity environments


def test_the_collection_builds_with_ansible_galaxy(tmp_path: Path) -> None:
    built = subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", COLLECTION, "--output-path", tmp_path],
        env=ansible_env(tmp_path / "work"), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (tarball,) = tmp_path.glob("luod-liveupdate-*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    for module in ("luod_facts", "luod_preflight", "luod_update", "luod_vm"):
        assert f"plugins/modules/{module}.py" in names
    assert {"plugins/action/luod_update.py", "roles/rolling_update/tasks/main.yml"} <= names
    assert {"playbooks/rolling_update.yml", "meta/runtime.yml", "MANIFEST.json"} <= names
    assert not [n for n in names if n.startswith("tests/output")]


def test_ansible_lint_passes_on_the_role_and_the_playbooks(tmp_path: Path) -> None:
    linted = subprocess.run(
        [BIN / "ansible-lint", "--offline", "--nocolor", "roles/rolling_update", "playbooks"],
        cwd=COLLECTION, env={**ansible_env(tmp_path), "HOME": str(tmp_path)},
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert linted.returncode == 0, linted.stdout[-4000:] + linted.stderr[-4000:]
    assert "0 failure(s), 0 warning(s)" in linted.stdout + linted.stderr


def test_ansible_test_sanity_passes() -> None:
    """``ansible-test sanity --local --python 3.11``: every test, in virtual environments of
    ansible-test's own, kept under ~/.cache/luod (the first run builds them: minutes; then
    seconds). ansible-test bootstraps pip in them with a script from a host this project does
    not reach: tests/fleet/sanity/get_pip.py stands in for it (Python's ensurepip, then pip)."""
    cache = SANITY_HOME / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(GET_PIP, cache / f"get_pip_{PIP_BOOTSTRAP.replace('.', '_')}.py")
    env = {
        "HOME": str(SANITY_HOME),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "LC_ALL": "C.UTF-8",
    }
    sanity = subprocess.run(
        [BIN / "ansible-test", "sanity", "--local", "--python", "3.11", "--color", "no"],
        cwd=COLLECTION, env=env, capture_output=True, text=True, check=False, timeout=1500,
    )  # fmt: skip
    shutil.rmtree(COLLECTION / "tests" / "output", ignore_errors=True)
    report = sanity.stdout[-6000:] + sanity.stderr[-6000:]
    assert sanity.returncode == 0, report
    assert 'Running sanity test "validate-modules"' in sanity.stdout + sanity.stderr, report
