"""The handover-ABI preflight (luod.core.compat / abi): its cost and its verdict for every pair
of the kernels at hand (tests/vm/get-kernel: 7.2.13, 7.3.4, the abi-v6 7.3.4).

Running kernel A is stood in for by its image: release and ``uname -v`` from its setup header,
and the debugfs blobs a cold-booted A shows (the KHO tree and ``struct luo_ser``) built from its
strings (tests/vm/test_cross_version.py checks on the real kernels that debugfs says the same).
"cold": an empty image cache, so both images are read and decompressed; "cached": the next
preflights (a stat per image), median of 50. Then the cold read of the 7.2.13 vmlinux
re-compressed with each compression the kernel can build with.

Column ``qualified``: preflight check ``qualified`` for the pair, given the qualification
records bench/qualification.py made in this run (the real-kernel chain 7.2.13 → 7.3.4 → 7.2.13
qualifies both directions; abi-v6 is never qualified).
"""

from __future__ import annotations

import subprocess
from functools import partial
from pathlib import Path
from typing import Any

from bench import qualification
from bench.stats import human, median, table, timed
from luod.core import abi, bzimage, compat
from luod.kernel import _simimage
from luod.kernel.images import Declared, HandoverBlobs
from tests.bzimages import COMPRESSORS

REPO = Path(__file__).resolve().parents[1]
KERNELS = {
    "7.2.13": "bzImage-7.2.13-luo",
    "7.3.4": "bzImage-7.3.4-luo",
    "abi-v6": "bzImage-7.3.4-luo-abi-v6",
}
CACHED_ROUNDS = 50


class ColdBootedImage:
    """What compat.assess asks a Backend, answered as a cold boot of ``image`` would."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self.declared = abi.image_facts(image.read_bytes()).declared

    def info(self) -> Any:
        class Info:
            release = self.declared.release
            version = self.declared.version

        return Info()

    def handover_blobs(self) -> HandoverBlobs:
        kho, luo = self.declared.kho or "", self.declared.luo or ""
        return HandoverBlobs(_simimage.fdt(kho), _simimage.luo_ser(luo, 1))

    def running_image(self) -> Path:
        return self.image


def kernels() -> dict[str, Path]:
    found = {}
    for label, name in KERNELS.items():
        done = subprocess.run(
            [str(REPO / "tests/vm/get-kernel"), name], capture_output=True, text=True, check=False
        )
        if done.returncode == 0 and done.stdout.strip():
            found[label] = Path(done.stdout.strip().splitlines()[-1])
    return found


def pair_row(a: str, b: str, images: dict[str, Path]) -> list[str]:
    running = ColdBootedImage(images[a])
    cache = compat.ImageCache()

    def assess() -> compat.Assessment:
        return compat.assess(
            running,  # type: ignore[arg-type]  # a stand-in for the three Backend calls it makes
            images[b],
            None,
            ["memfd"],
            False,
            False,
            qualification.RECORDS,
            cache,
        )

    cold = timed(assess)
    cached = median([timed(assess) for _ in range(CACHED_ROUNDS)])
    found = assess()
    verdict, qualified = found.verdict, found.qualification.status
    return [
        f"{a} -> {b}",
        verdict.status,
        qualified,
        human(cold),
        human(cached),
        verdict.message[:80],
    ]


def compression_rows(image: Path) -> list[list[str]]:
    vmlinux = bzimage.vmlinux(image.read_bytes()).data
    rows = []
    for name, compress in sorted(COMPRESSORS.items()):
        payload = compress(vmlinux)
        synthetic = _synthetic_bzimage(payload)
        seconds = median([timed(partial(abi.image_facts, synthetic)) for _ in range(3)])
        rows.append([name, f"{len(payload) >> 10} KiB", human(seconds)])
    return rows


def _synthetic_bzimage(payload: bytes) -> bytes:
    """The real vmlinux, compressed with another method, behind a synthetic setup header."""
    return _simimage.bzimage(_HEADER_ONLY, lambda _: payload)


_HEADER_ONLY = Declared("7.2.13", "#1", None, None)


def report() -> str:
    images = kernels()
    if not images:
        return "Handover-ABI preflight: no kernels at hand (tests/vm/get-kernel NAME)"
    rows = [pair_row(a, b, images) for a in images for b in images]
    text = "Handover-ABI preflight per pair of kernels (A running, B next; this host)\n"
    text += table(["A -> B", "verdict", "qualified", "cold", "cached", "message"], rows)
    if "7.2.13" in images:
        text += "\n\nCold read of the 7.2.13 vmlinux, per compression (decompress + scan)\n"
        text += table(["compression", "payload", "cold"], compression_rows(images["7.2.13"]))
    return text


if __name__ == "__main__":
    print(report())
