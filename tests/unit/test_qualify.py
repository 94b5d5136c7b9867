"""luod.core.qualify: the canary plan covers what issue 14 §1 lists, contents are reproducible
from the seed, and the verdicts catch every kind of damage."""

from __future__ import annotations

import hashlib

import pytest

from luod.core import qualify
from luod.core.qualify import BLOCK, MIB, CanaryFile, Observed

pytestmark = pytest.mark.unit


def files(plan: list[qualify.CanarySession]) -> dict[str, CanaryFile]:
    return {f"{s.name}/{f.label}": f for s in plan for f in s.files}


def content(canary: CanaryFile, late: bool = True) -> bytes:
    pick = qualify.final_block if late else qualify.block
    return b"".join(pick(canary, i) for i in range(canary.blocks))


def observed(canary: CanaryFile, data: bytes, seals: int | None = None) -> Observed:
    holes = qualify.zero_holes(canary)
    nonzero = tuple(i for i in sorted(holes) if any(data[i * BLOCK : (i + 1) * BLOCK]))
    found = canary.seals_after() if seals is None else seals
    return Observed(len(data), found, hashlib.sha256(data).hexdigest(), nonzero)


def test_the_default_plan_covers_every_behaviour() -> None:
    plan = qualify.plan("q1", qualify.Options(), limit=1000)
    by_label = {s.name.split(".")[2]: s for s in plan}
    mixed = {f.label: f for f in by_label["mixed"].files}
    assert mixed["large"].size >= 256 * MIB and len({f.size for f in mixed.values()}) >= 5
    assert mixed["sealed"].seals & qualify.F_SEAL_WRITE and mixed["noexec"].noexec
    assert mixed["sparse"].holes and set(mixed["sparse"].late) & set(mixed["sparse"].holes)
    assert all(i < f.blocks for f in mixed.values() for i in f.late)  # inside the size (§6.2)
    assert not mixed["sealed"].late  # a write-sealed memfd takes no write
    assert by_label["empty"].files == ()
    assert len(by_label["many"].files) == 130 > 63  # more than one block of file records
    assert len(plan) == 3 + 16
    assert max(len(s.name) for s in plan) == qualify.NAME_LIMIT
    assert all(s.name.startswith(qualify.PREFIX) and not s.name.startswith("luod.") for s in plan)
    tokens = [f.token for f in by_label["mixed"].files]
    assert len(set(tokens)) == len(tokens)


def test_sessions_stop_at_luods_limit() -> None:
    plan = qualify.plan("q1", qualify.Options(sessions=50), limit=10)
    assert len(plan) == 10


def test_contents_are_reproducible_and_distinct() -> None:
    a = qualify.plan("q1", qualify.Options(large_mib=1), 100)
    b = qualify.plan("q1", qualify.Options(large_mib=1), 100)
    assert a == b
    canary = files(a)[f"{a[0].name}/odd"]
    assert len(content(canary)) == canary.size == 3 * BLOCK + 123
    blocks = [qualify.final_block(canary, i) for i in range(canary.blocks)]
    assert len(set(blocks)) == len(blocks)  # no two blocks alike: a misplaced page shows


def test_expected_sha256_includes_the_writes_after_preserve_and_the_holes() -> None:
    plan = qualify.plan("q2", qualify.Options(large_mib=1), 100)
    sparse = files(plan)[f"{plan[0].name}/sparse"]
    assert qualify.expected_sha256(sparse) == hashlib.sha256(content(sparse)).hexdigest()
    assert qualify.expected_sha256(sparse) != hashlib.sha256(content(sparse, False)).hexdigest()
    before = content(sparse, late=False)
    assert before[:BLOCK] == bytes(BLOCK)  # block 0 is a hole


def test_noexec_seals_come_back_expanded() -> None:
    canary = CanaryFile("n", 1, 4096, 7, noexec=True)
    assert canary.seals_at_preserve() == 0x20 and canary.seals_after() == 0x3E
    sealed = CanaryFile("s", 1, 4096, 7, seals=0xF)
    assert sealed.seals_after() == 0xF


def test_an_intact_canary_passes() -> None:
    plan = qualify.plan("q3", qualify.Options(large_mib=1), 100)
    sparse = files(plan)[f"{plan[0].name}/sparse"]
    checks = qualify.verify_file("s", sparse, observed(sparse, content(sparse)))
    assert all(c.result == "pass" for c in checks) and len(checks) == 4


@pytest.mark.parametrize("damage", ["byte", "hole", "seals", "size", "late-write-lost"])
def test_every_kind_of_damage_fails_a_check(damage: str) -> None:
    plan = qualify.plan("q4", qualify.Options(large_mib=1), 100)
    sparse = files(plan)[f"{plan[0].name}/sparse"]
    data, seals = bytearray(content(sparse)), None
    if damage == "byte":
        data[BLOCK + 5] ^= 1
    elif damage == "hole":
        data[3 * BLOCK] = 1  # block 3: a hole never written after preserve
    elif damage == "seals":
        seals = qualify.F_SEAL_WRITE
    elif damage == "size":
        data = data[:-1]
    else:
        data = bytearray(content(sparse, late=False))
    checks = qualify.verify_file("s", sparse, observed(sparse, bytes(data), seals))
    failed = {c.name.rsplit(": ", 1)[1] for c in checks if c.result == "fail"}
    wanted = {
        "byte": {"sha256"},
        "hole": {"sha256", "holes read as zeros"},
        "seals": {"seals"},
        "size": {"size", "sha256"},
        "late-write-lost": {"sha256"},
    }[damage]
    assert failed == wanted


def test_the_plan_rides_the_manifest_as_plain_data() -> None:
    plan = qualify.plan("q5", qualify.Options(large_mib=1), 100)
    again = [qualify.CanarySession.from_dict(s.to_dict()) for s in plan]
    assert again == plan
    assert qualify.Options.from_dict({"large_mib": "2", "junk": 1}) == qualify.Options(large_mib=2)
