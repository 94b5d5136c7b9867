"""Where a fuzz input's choices come from: a seeded ``random.Random`` (the socket target, the
replays) or atheris' ``FuzzedDataProvider`` (the coverage-guided targets), behind one protocol,
so the same generators serve both."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Draw(Protocol):
    def below(self, n: int) -> int:
        """An integer in [0, n)."""

    def raw(self, n: int) -> bytes:
        """Up to ``n`` bytes."""


class RandomDraw:
    def __init__(self, seed: int | str) -> None:
        self.rng = random.Random(seed)

    def below(self, n: int) -> int:
        return self.rng.randrange(n) if n > 1 else 0

    def raw(self, n: int) -> bytes:
        return self.rng.randbytes(n)


class ProviderDraw:
    """Over ``atheris.FuzzedDataProvider``: once the input is used up every choice is 0, the
    first (most ordinary) option, so short inputs make short, mostly valid scripts."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def below(self, n: int) -> int:
        return int(self.provider.ConsumeIntInRange(0, n - 1)) if n > 1 else 0

    def raw(self, n: int) -> bytes:
        return bytes(self.provider.ConsumeBytes(n))


def pick(draw: Draw, options: Sequence[T]) -> T:
    return options[draw.below(len(options))]


def one_in(draw: Draw, n: int) -> bool:
    """True once in ``n`` draws (for a random source), or never for an exhausted input."""
    return draw.below(n) == n - 1
