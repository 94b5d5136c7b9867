"""Issue 12 §3 on the real kernel: two clients written only from luo-agent's README (8 and
32 MiB of memfd, tests/vm/luo_agent_client.py, which imports nothing of luod) across a real
kexec. Each gets START_PRESERVATION with the session fd, preserves with the raw ioctl, answers
one READY, and is never sent FREEZE: the update reaches the kexec within a 3 s freezing
deadline. After the reboot each CLAIMs, retrieves and FINISHes, gets byte-identical memory, and
the update completes without a DONE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.vm.qemu import run_guest
from tests.vm.test_datapath import stage

AGENTS = {"agent-8": 8 << 20, "agent-32": 32 << 20}
FULL_PATH = ["preparing", "prepared", "freezing", "frozen", "rebooting", "reclaiming", "idle"]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_luo_agent_clients_across_a_real_kexec(
    luo_kernel: Path, vm_python: Path, tmp_path: Path
) -> None:
    stages = [stage(f"luo-agent-{n}.sh", vm_python, luo_kernel) for n in (1, 2)]
    result = run_guest(stages, kernel=luo_kernel, timeout=540, workdir=tmp_path)
    share = result.run_dir / "share"
    result.check()
    assert result.boots == 2
    checks = json.loads((share / "preflight.json").read_text())["checks"]
    (pause,) = [c for c in checks if c["id"] == "pause"]
    assert pause["status"] == "warn" and all(agent in pause["message"] for agent in AGENTS)
    for agent, size in AGENTS.items():
        seen = lines(share / f"{agent}-run.log")
        events = [m["got"]["event"] for m in seen if "event" in m.get("got", {})]
        assert events == ["START_PRESERVATION"], events  # no FREEZE, no RESUME, no progress
        ready = [m for m in seen if m.get("event") == "ready"]
        verdict = lines(share / f"{agent}-claim.log")[-1]
        assert verdict["event"] == "verified", verdict
        assert (verdict["size"], verdict["sha256"]) == (size, ready[0]["sha256"])
    assert json.loads((share / "list-after-claim.json").read_text()) == []
    final = json.loads((share / "history.json").read_text())[-1]
    assert final["outcome"] == "completed", final["reason"]
    assert [p["to"] for p in final["phases"]] == FULL_PATH
    for agent in AGENTS:
        steps = final["vms"][agent]
        assert {"preserve_ack", "freeze_trusted", "freeze_ack", "reclaimed", "done"} <= set(steps)
        assert final["blackout"][agent] > 0
