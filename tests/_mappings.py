"""Odd mappings the tests hand to devicemap."""

from __future__ import annotations

from collections.abc import Iterator, Mapping


class Huge(Mapping[str, int]):
    """A mapping that claims far more entries than any memory holds (it yields one key)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: str) -> int:
        return 0

    def __iter__(self) -> Iterator[str]:
        return iter(["a"])
