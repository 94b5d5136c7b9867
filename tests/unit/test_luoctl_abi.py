"""luoctl shows the handover-abi check, takes --allow-unknown-abi, and the update record and
history show the override (a luod on the simulator behind its REST API, as test_luoctl)."""

from __future__ import annotations

import re

import pytest

from luod.kernel import _simimage
from tests.bzimages import B_7_3, B_ABI_V6, bzimage
from tests.unit.test_luoctl import Host

pytestmark = pytest.mark.anyio


def kernel(host: Host, name: str, data: bytes) -> tuple[str, ...]:
    path = host.state / name
    path.write_bytes(data)
    return ("--kernel", str(path), "--reuse-cmdline")


async def test_preflight_names_both_luo_strings_and_refuses(host: Host) -> None:
    ran = await host.luoctl("preflight", *kernel(host, "v6", bzimage(B_ABI_V6)))
    assert ran.code == 3
    assert re.search(r"FAIL  handover-abi +incompatible handover: LUO ABI 'luo-v5'", ran.out)
    assert "'luo-v6' (next 7.3.4 #2)" in ran.out and "preflight REFUSES" in ran.out
    forced = await host.luoctl(
        "preflight", *kernel(host, "v6", bzimage(B_ABI_V6)), "--allow-unknown-abi"
    )
    assert forced.code == 3  # a known mismatch is not "unknown"
    ok = await host.luoctl("preflight", *kernel(host, "b", bzimage(B_7_3)))
    assert ok.code == 0 and re.search(r"ok    handover-abi +kho-v4, luo-v5, memfd-v2", ok.out)
    assert "WARN  qualified" in ok.out


async def test_the_override_is_shown_and_recorded(host: Host) -> None:
    odd = kernel(host, "odd", _simimage.bzimage(B_7_3, lambda d: b"\x12\x34\x56\x78" + d))
    refused = await host.luoctl("update", "start", *odd)
    assert refused.code == 3 and "FAIL handover-abi: cannot tell" in refused.err
    started = await host.luoctl(
        "update", "start", *odd, "--allow-unknown-abi", "--deadline", "freezing=60"
    )
    assert started.code == 0
    shown = await host.luoctl("update", "show")
    assert "handover ABI warn (OVERRIDDEN by the operator): not verified" in shown.out
    record = (await host.luoctl("--json", "update", "show")).json()["update"]
    assert record["request"]["allow_unknown_abi"] is True
    seen = record["request"]["handover_abi"]
    assert seen["override"] is True and "unknown compression" in seen["next"]["unknown"]["luo"]
    assert (await host.luoctl("update", "abort")).code == 0
    past = await host.luoctl("history")
    assert past.out.splitlines()[-1].split()[5:7] == ["-", "override"]
