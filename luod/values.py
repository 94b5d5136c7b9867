"""``Value``: what a frozen dataclass gives a NamedTuple that it lacks, equality within its class.

Python 3.11's ``dataclasses`` compiles each generated method of a class with its own ``exec``:
a frozen dataclass costs 0.35-0.5 ms to make, and the dataclasses made while ``import
luod.main`` runs were 27 ms of its ~97 ms on a host (bench/NOTES.md, Start-up), seconds under
TCG right after a kexec, in the VMs' pause. A NamedTuple's class is made with one ``eval``
(about 0.07 ms), is as immutable, and keeps the fields, keyword construction, defaults,
``repr`` and class patterns (``case Preserve(id=vm)``) that the code uses.

What a bare NamedTuple would change: it equals any tuple of the same items, another kind's
included (``Status(seq=1) == Watch(seq=1)``), which a test comparing a decoded request with the
expected one must not let pass. So the fields go in a NamedTuple, and the class is that
NamedTuple with ``Value`` first::

    class _Drop(NamedTuple):
        seq: int | None
        id: str

    class Drop(Request, _Drop):  # Request derives from Value
        __slots__ = ()

``Value`` declares no fields (``__slots__ = ()``), so the class stays a plain tuple in memory.
"""

from __future__ import annotations


class Value:
    """Equal only to an instance of the very same class with equal fields; hashed as its
    tuple. Put it before the NamedTuple among the bases, so that its methods come first."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)  # type: ignore[operator]

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__
