"""The hand-written ``to_dict`` of the values serialized on the update's path (no
``dataclasses.asdict``, 10x slower: bench/NOTES.md) say what the NamedTuple's ``_asdict``
says, field for field."""

from __future__ import annotations

from luod.core.clock import Stamp
from luod.core.model import Owner


def test_a_stamp_as_asdict_has_it() -> None:
    stamp = Stamp(1.5, 2.5, 3.5)
    assert stamp.to_dict() == stamp._asdict()


def test_an_owner_as_asdict_has_it() -> None:
    owner = Owner(1000, 1001, 42, "vmm.slice")
    assert owner.to_dict() == owner._asdict()
