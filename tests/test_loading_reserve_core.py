"""`loading_reserve`'s sums per module in Rust (`_core._largest_conversion`, the `regex` crate):
the same as Python's `re` for every converter transformers ships, and `None` (Python's `re`
decides) for patterns the two could read differently."""

from __future__ import annotations

import random
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from devicemap import _core
from devicemap.integrations.transformers import _largest_by_re


class Converter:
    """A stand-in with the one attribute the sums read."""

    def __init__(self, target_patterns: list[str]) -> None:
        self.target_patterns = target_patterns


def shipped() -> list[Any]:
    from transformers.conversion_mapping import _build_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightConverter

    return [
        entry
        for entries in _build_checkpoint_conversion_mapping().values()
        for entry in entries or ()
        if isinstance(entry, WeightConverter)
    ]


def names_for(patterns: list[str], rng: random.Random) -> dict[str, int]:
    """Names a model could hold around `patterns`: matches under several layers, matches with a
    tail, a `.` of the pattern met by another character, near misses, and unrelated names."""
    names: dict[str, int] = {}
    for pattern in patterns:
        plain = pattern.replace("\\.", ".")
        for layer in range(3):
            for name in (
                f"model.layers.{layer}.{plain}",
                f"model.layers.{layer}.{plain}.weight",
                f"model.layers.{layer}.{plain.replace('.', 'X', 1)}",
                f"model.layers.{layer}.{plain[:-1]}",
                f"{plain}.{plain}",
            ):
                names[name] = rng.randrange(1, 2**40)
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", ""):
        names[name] = rng.randrange(1, 2**40)
    return names


def test_every_shipped_converter_is_summed_in_rust_as_re_sums_it() -> None:
    converters = shipped()
    assert len(converters) > 100  # transformers 5.24 ships 184
    rng = random.Random(0)
    everything: dict[str, int] = {}
    for converter in converters:
        sizes = names_for(list(converter.target_patterns), rng)
        everything.update(sizes)
        found = _core._largest_conversion(sizes, [converter.target_patterns])
        assert found is not None, converter.target_patterns  # read in Rust, not left to `re`
        assert found > 0
        assert found == _largest_by_re(sizes, [converter]), converter.target_patterns
    # All of them over all the names: each converter sums over names made for the others too.
    found = _core._largest_conversion(everything, [c.target_patterns for c in converters])
    assert found == _largest_by_re(everything, converters)


@pytest.mark.parametrize(
    "patterns",
    [[r"layers\.(\d+)\.mlp"], [r"(?<!shared_)experts"], ["[ab]"], ["a|b"], ["experts*"], ["é"]],
)
def test_patterns_re_must_read_are_left_to_it(patterns: list[str]) -> None:
    sizes = {"model.layers.0.mlp.experts.a": 3}
    assert _core._largest_conversion(sizes, [patterns]) is None
    assert _largest_by_re(sizes, [Converter(patterns)]) >= 0  # what loading_reserve then uses


def test_names_and_sizes_re_must_read_are_left_to_it() -> None:
    patterns = [["experts"]]
    assert _core._largest_conversion({"a.experts\nb": 1}, patterns) is None  # a line break
    assert _core._largest_conversion({"a.experts": -1}, patterns) is None
    assert _core._largest_conversion({"a.\udc80.experts": 1}, patterns) is None  # not UTF-8
    assert _core._largest_conversion({"a.experts": 1}, ["experts"]) is None  # not lists
    assert _core._largest_conversion({"a.experts": 1, "b.experts": 2}, patterns) == 2


def test_a_dot_matches_any_character_but_a_line_break() -> None:
    sizes = {"é.mlp.experts.down_proj": 5, "é.mlpéexperts.down_proj": 7, "é.mlp.experts.up": 1}
    converter = Converter(["mlp.experts.down_proj"])
    assert _core._largest_conversion(sizes, [converter.target_patterns]) == 12
    assert _largest_by_re(sizes, [converter]) == 12


def test_no_patterns_match_every_name_as_re_does() -> None:
    sizes = {"a.x": 1, "b.y": 2}
    assert _core._largest_conversion(sizes, [[]]) == 3 == _largest_by_re(sizes, [Converter([])])
