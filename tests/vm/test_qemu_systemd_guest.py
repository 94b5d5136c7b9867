"""Issue 12 in the systemd-262 guest (tests/vm/systemd/): sid's QEMU runs the L2 boot-sector
guest as ``luod-qemu@l2.service`` (its QEMU arguments in /etc/luod/qemu/l2.conf); luod updates
the host with ``systemctl kexec``, which stops the frozen VM unit; after the reboot the same
unit, ordered after luod-ready.target, restores the guest, which goes on: same boot stamp,
counter on from where it was, pattern byte-identical, still counting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from luod.qemu.canary import qemu_args
from tests.vm import l2guest
from tests.vm.systemd import guest

SHARE_FLOPPY = Path("/run/sdg-share/floppy.img")


def guest_files() -> dict[str, str]:
    args = " ".join(qemu_args(SHARE_FLOPPY))  # what l2guest.py runs
    return {
        "l2guest.py": Path(l2guest.__file__).read_text(),
        "etc/luod/qemu/l2.conf": f"RAM=64M\nQEMU_ARGS={args}\n",
        # luod-qemu's report (/var/lib/luod-qemu) outlives the boot on the share
        "etc/systemd/system/luod-qemu@.service.d/sdg.conf": (
            "[Service]\nBindPaths=/run/sdg-share/luod-qemu:/var/lib/luod-qemu\n"
        ),
        "luod-qemu/.keep": "",
        # running_image: no /boot/vmlinuz-RELEASE in the guest (the handover-abi preflight)
        "etc-1/luod/luod.toml": (
            '[kexec]\nmode = "auto"\nrunning_image = "/run/sdg-share/bzImage"\n'
        ),
        "enable-2": "luod-qemu@l2.service\n",
    }


@pytest.fixture(scope="module")
def run(luo_kernel: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    stages = [(guest.HERE / f"stage-qemu-{n}.sh").read_text() for n in (1, 2)]
    return guest.run(
        stages,
        kernel=luo_kernel,
        root=guest.rootfs(guest.luod_deb()),
        workdir=tmp_path_factory.mktemp("sdg-qemu"),
        files=guest_files(),
        timeout=600,
    )


def _is_json(line: str) -> bool:
    return line.startswith("{")


def load(share: Path, name: str) -> Any:
    return json.loads((share / name).read_text())


@pytest.mark.timeout(1800)  # the first run builds the .deb and the sid root (cached after)
def test_qemu_unit_guest_goes_on_across_systemctl_kexec(run: Any) -> None:
    share = run.share
    run.check()
    assert run.boots == 2, run.report()
    before, running = load(share, "l2-before.json"), load(share, "l2-running.json")
    after_1, after_2 = load(share, "l2-after-1.json"), load(share, "l2-after-2.json")
    assert before["magic"] == "LUOD" and running["counter"] > before["counter"]
    assert after_2["stamp"] == before["stamp"], "the guest was reset (its boot code ran again)"
    assert after_2["counter"] > after_1["counter"] >= running["counter"]
    assert after_2["pattern_sha256"] == before["pattern_sha256"]

    reports = [json.loads(line) for line in (share / "luod-qemu/l2.jsonl").read_text().splitlines()]
    frozen = next(r for r in reports if r["event"] == "frozen")
    restored = next(r for r in reports if r["event"] == "restored")
    assert restored["state_bytes"] == frozen["state_bytes"] > 0
    assert restored["pause"] > restored["reboot"] > 0
    assert (share / "l2-active.txt").read_text().strip() == "active"
    # the packaged luod-qemu (luod.qemu.start) took a start slot in the unit's RuntimeDirectory=
    journal = (share / "l2-journal-2.txt").read_text().splitlines()
    [slot] = [e for e in map(json.loads, filter(_is_json, journal)) if e["event"] == "start-slot"]
    assert slot["gated"] and slot["directory"] == "/run/luod-qemu/start-slots", slot
    # l2 reclaimed from its unit's cgroup through luod's kept retrieve helper, which luod.start
    # forked before luod's imports (after a live update, in luod.service's own cgroup) and
    # which runs beside luod in luod.service: no fork of luod at the RECLAIM
    # (luod.kernel.retriever.begin_early); once the update ended it retired, back home in
    # luod.service's cgroup after the RECLAIM
    luod_log = [json.loads(x) for x in (share / "luod-journal-2.txt").read_text().splitlines()
                if _is_json(x)]  # fmt: skip
    served = [e for e in luod_log if e["event"] == "retrieved-in-cgroup"]
    assert [(e["cgroup"].rsplit("/", 1)[-1], e["via"]) for e in served] == [
        ("luod-qemu@l2.service", "helper")
    ], served
    said = [e for e in luod_log if e["event"].startswith("retriever-")]
    assert [e["event"] for e in said] == ["retriever-begun", "retriever-retired"], said
    assert said[0]["pid"] == said[1]["pid"] and said[0]["note"].startswith("forked"), said
    assert said[1]["cgroup"].endswith("/luod.service"), said
    # preflight saw l2's VMM apart from luod, and read the mount as it is: it warns unless
    # cgroup v2 favors migrations (docs/kernel.md §6.4)
    [migrations] = [c for c in load(share, "preflight-1.json")["checks"]
                    if c["id"] == "cgroup-migrations"]  # fmt: skip
    favored = "favordynmods" in (share / "cgroup2-mount.txt").read_text()
    assert migrations["status"] == ("pass" if favored else "warn"), migrations
    assert migrations["message"].startswith("VMs whose VMM runs in a cgroup of its own: 1 (l2)")
    [vm] = load(share, "vms-before.json")["vms"]
    assert vm["id"] == "l2" and vm["state"] == "preserved"
    [again] = load(share, "vms-after.json")["vms"]
    assert again["state"] == "preserved"  # preserved again by the restored unit
    assert load(share, "vms-stopped.json")["vms"] == []
    final = load(share, "history.json")["history"][-1]
    assert final["outcome"] == "completed", final
    rebooting = next(p for p in final["phases"] if p["to"] == "rebooting")
    assert rebooting["reason"] == "kexec (systemd)", rebooting
    print(json.dumps({"frozen": frozen, "restored": restored}, indent=1))
