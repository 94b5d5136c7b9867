"""The handover-ABI verdict (luod.core.abi) and how its facts are gathered (luod.core.compat)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from luod.core import abi, compat, qualified
from luod.kernel import _simabi, _simimage
from luod.kernel.images import Declared, HandoverBlobs
from luod.kernel.sim import sim_backend
from tests.bzimages import A_7_2, B_7_3, B_ABI_V6, bzimage

COLD_BLOBS = HandoverBlobs(_simimage.fdt("kho-v4"), _simimage.luo_ser("luo-v5", 1))
KEXECED_BLOBS = HandoverBlobs(
    None, _simimage.luo_ser("luo-v5", 2), missing={"fdt": "No such file or directory"}
)


def facts(declared: Declared) -> abi.ImageFacts:
    return abi.image_facts(bzimage(declared))


def running(blobs: HandoverBlobs = COLD_BLOBS, image: Declared | None = A_7_2) -> abi.Side:
    problem = "" if image else "cannot read /boot/vmlinuz-7.2.13: No such file or directory"
    found = facts(image) if image else None
    return abi.running_side("7.2.13", A_7_2.version, 4096, blobs, found, problem)


def judge(a: abi.Side, b: abi.Side, allow: bool = False) -> abi.Verdict:
    return abi.verdict(a, b, {"memfd"}, allow)


def test_same_abi_passes_and_names_the_strings() -> None:
    verdict = judge(running(), abi.next_side(facts(B_7_3)))
    assert verdict.status == "pass"
    assert verdict.message == "kho-v4, luo-v5, memfd-v2 on both sides (7.2.13 → 7.3.4); 4 KiB pages"


def test_another_luo_abi_fails_naming_both_strings_and_the_panic() -> None:
    verdict = judge(running(), abi.next_side(facts(B_ABI_V6)), allow=True)
    assert verdict.status == "fail"  # a known mismatch is never overridden
    assert "'luo-v5' (running 7.2.13 #1) vs 'luo-v6' (next 7.3.4 #2)" in verdict.message
    assert "panic" in verdict.message


def test_another_file_handler_fails_with_the_eio_consequence() -> None:
    b = Declared("7.3.4", "#1", "kho-v4", "luo-v5", {"memfd": "memfd-v3"})
    verdict = judge(running(), abi.next_side(facts(b)))
    assert verdict.status == "fail"
    assert "memfd file handler 'memfd-v2' (running 7.2.13 #1) vs 'memfd-v3'" in verdict.message
    assert "EIO" in verdict.message


def test_a_next_kernel_without_luo_or_memfd_fails() -> None:
    bare = Declared("7.3.4", "#1", "kho-v4", None, {})
    message = judge(running(), abi.next_side(facts(bare))).message
    assert "LUO ABI 'luo-v5' (running 7.2.13 #1) vs none" in message
    assert "memfd file handler 'memfd-v2' (running 7.2.13 #1) vs none" in message


def test_another_kho_abi_fails() -> None:
    b = Declared("7.3.4", "#1", "kho-v5", "luo-v5", {"memfd": "memfd-v2"})
    verdict = judge(running(), abi.next_side(facts(b)))
    assert verdict.status == "fail" and "KHO ABI 'kho-v4'" in verdict.message


def test_unreadable_next_image_refuses_unless_overridden() -> None:
    b = abi.next_side(None, "/boot/x: unknown compression (payload starts with 123456)")
    verdict = judge(running(), b)
    assert verdict.status == "fail" and "cannot tell" in verdict.message
    assert "unknown compression" in verdict.message and "--allow-unknown-abi" in verdict.hint
    overridden = judge(running(), b, allow=True)
    assert overridden.status == "warn" and "operator override" in overridden.message


def test_no_image_of_the_running_kernel_names_what_is_missing() -> None:
    verdict = judge(running(image=None), abi.next_side(facts(B_7_3)))
    assert verdict.status == "fail"
    assert "running 7.2.13 #1's file handlers (cannot read /boot/vmlinuz-7.2.13" in verdict.message


def test_after_a_live_update_kho_comes_from_the_image() -> None:
    a = running(KEXECED_BLOBS)
    assert a.kho == "kho-v4"
    assert a.sources["kho"].startswith("the running kernel's image (debugfs kho/out/fdt: No such")
    assert a.sources["luo"] == "debugfs kho/out/sub_fdts/LUO"
    assert judge(a, abi.next_side(facts(B_7_3))).status == "pass"


def test_after_a_live_update_without_an_image_kho_is_unknown() -> None:
    a = running(KEXECED_BLOBS, image=None)
    assert "kho" in a.unknown and "docs/kernel.md §8.2" in a.unknown["kho"]
    assert a.luo == "luo-v5"  # debugfs still tells


def test_without_debugfs_the_verified_image_tells() -> None:
    missing = {"fdt": "Permission denied", "luo": "Permission denied"}
    a = running(HandoverBlobs(missing=missing))
    assert (a.kho, a.luo) == ("kho-v4", "luo-v5")


def test_an_image_of_another_build_is_not_the_running_kernel() -> None:
    other = Declared("7.2.13", "#7 SMP other build", "kho-v4", "luo-v5", {"memfd": "memfd-v2"})
    a = running(image=other)
    assert a.handlers is None
    assert "is 7.2.13 '#7 SMP other build', but the running kernel is" in a.unknown["handlers"]


def test_a_delegated_vmm_needs_every_handler_of_the_running_kernel() -> None:
    a = running()
    assert abi.needed_kinds([], False, a) == {"memfd"}  # luod's own state session
    assert abi.needed_kinds(["memfd"], True, a) == {"memfd"}


def test_qualification_lookup_on_hand_made_records() -> None:
    a, b = running(), abi.next_side(facts(B_7_3))
    chain = [{"release": "7.2.13", "version": A_7_2.version}, {"release": "7.3.4"}]
    records: list[dict[str, Any]] = [  # history records, as JSON
        {"kind": "update", "outcome": "completed"},
        {"kind": "qualification", "outcome": "failed", "chain": chain, "id": "q1"},
    ]
    assert qualified.find_qualification(records, a, b) is None
    assert qualified.qualification_verdict(None, a, b).status == "warn"
    records.append({"kind": "qualification", "outcome": "passed", "chain": chain, "id": "q2"})
    found = qualified.find_qualification(records, a, b)
    assert found is not None and found["id"] == "q2"
    assert qualified.qualification_verdict(found, a, b).status == "pass"
    # kernels match by release, and by `uname -v` where the record has it: the chain above
    # names no version for 7.3.4, so any build of it matches; one that names "#1" does not
    # qualify abi-v6's "#2" build of the same release
    assert qualified.find_qualification(records, a, abi.next_side(facts(B_ABI_V6))) is not None
    strict = [{"release": "7.2.13"}, {"release": "7.3.4", "version": B_7_3.version}]
    records[-1] = {"kind": "qualification", "outcome": "passed", "chain": strict}
    assert qualified.find_qualification(records, a, b) is not None
    assert qualified.find_qualification(records, a, abi.next_side(facts(B_ABI_V6))) is None
    assert qualified.find_qualification(records, b, a) is None  # a step has a direction


def test_cache_reads_an_image_once_until_it_changes(tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(bzimage(B_7_3))
    cache = compat.ImageCache()
    first, _ = cache.facts(image)
    again, _ = cache.facts(image)
    assert first is again and cache.reads == 1
    image.write_bytes(bzimage(B_ABI_V6))
    os.utime(image, ns=(1, 1))
    changed, _ = cache.facts(image)
    assert cache.reads == 2 and changed is not None and changed.declared.luo == "luo-v6"
    missing, why = cache.facts(tmp_path / "nope")
    assert missing is None and "cannot read" in why and "nope" in why


def test_compat_on_the_simulator_reads_its_installed_image(tmp_path: Path) -> None:
    backend = sim_backend(tmp_path / "sim")
    image = tmp_path / "b"
    image.write_bytes(bzimage(B_ABI_V6))
    found = compat.assess(backend, image, None, ["memfd"], False, False, [], compat.ImageCache())
    assert found.running.release == _simabi.SIM_RELEASE
    assert found.running.sources["kho"] == "debugfs kho/out/fdt"
    assert found.verdict.status == "fail" and "'luo-v6'" in found.verdict.message
    assert found.to_record()["next"]["luo"] == "luo-v6"


@pytest.mark.parametrize("compression", ["gzip", "xz"])
def test_the_record_says_where_each_string_came_from(compression: str) -> None:
    side = abi.next_side(abi.image_facts(bzimage(B_7_3, compression)))
    assert side.sources["luo"] == f"its image ({compression})"
