"""What the running kernel shows of its handover ABI in KHO's debugfs (docs/kernel.md §8.2,
§2.4): the KHO tree (``kho-v4``) only on a cold boot, ``struct luo_ser`` (``luo-v5``,
the liveupdate number it hands on) and the kexec metadata (its release) on every boot."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from luod.core import abi
from luod.kernel import probes
from tests.contract.harness import Luo


def handed_on(blob: bytes | None) -> int:
    assert blob is not None and len(blob) == 32
    return int(struct.unpack_from("<Q", blob, 8)[0])


def luo_and_release(luo: Luo) -> int:
    blobs, info = luo.backend.handover_blobs(), luo.backend.info()
    assert blobs.luo is not None and abi.luo_compatible(blobs.luo) == "luo-v5"
    assert handed_on(blobs.luo) == info.liveupdate_number + 1
    assert blobs.metadata is not None
    meta = probes.parse_kexec_metadata(blobs.metadata)
    assert meta is not None and meta[0] == info.release
    return info.liveupdate_number


@pytest.mark.boots(2)
def test_kho_tree_on_a_cold_boot_only_luo_on_every_boot(luo: Luo, boots: Any) -> None:
    def cold(luo: Luo, _: dict[str, Any]) -> dict[str, Any]:
        blobs = luo.backend.handover_blobs()
        assert blobs.fdt is not None and abi.fdt_compatible(blobs.fdt) == "kho-v4"
        return {"number": luo_and_release(luo)}

    def after_kexec(luo: Luo, state: dict[str, Any]) -> None:
        blobs = luo.backend.handover_blobs()
        assert blobs.fdt is None and "fdt" in blobs.missing
        assert luo_and_release(luo) == state["number"] + 1

    boots.run(cold, after_kexec)
