"""Renaming once per name template (`_loaded._renamed`'s fast path): which patterns it trusts,
and the core's templates, fill and fallback. The comparison with transformers' renamer called
on every key of real architectures is in test_loaded_names.py."""

from __future__ import annotations

from devicemap import _core
from devicemap._loaded import _names_a_number


def test_a_digit_inside_a_word_names_no_number() -> None:
    # Mixtral's converters name `w1`, `w2`, `w3`: no numbered component can match those digits.
    assert not _names_a_number(r"block_sparse_moe\.experts\.(\d+)\.w1")
    assert not _names_a_number(r"mlp\.experts\.\d+\.gate_proj")
    # A single `\d` tells layer 3 from layer 13 (and from the stand-in), `\d+` does not.
    assert _names_a_number(r"layers\.(\d)\.mlp")
    for pattern in [r"layers\.1\.feed", "experts.0", "[0-9]", r"\d1", "(w|)1", r"\d{2}"]:
        assert _names_a_number(pattern), pattern


def test_keys_renamed_from_their_templates_or_not_at_all() -> None:
    keys = ["model.layers.0.w1.weight", "model.layers.10.w1.weight", "lm_head.weight"]
    templates = _core._name_templates(keys)
    assert templates == [("model.layers.7300000000.w1.weight", keys[0]), ("lm_head.weight", keys[2])]

    # A loader that drops `model.` renames each template and its first key alike.
    def drop(name: str) -> str:
        return name.removeprefix("model.")

    renames = {t: (drop(t), None, [], drop(first), None) for t, first in templates}
    state = ["layers.0.w1.weight", "layers.10.w1.weight", "lm_head.weight"]
    assert _core._renamed_keys(keys, renames, "model", state) == (state, [])
    # The base model prefix is put back where the model has it (transformers' rule).
    assert _core._renamed_keys(keys, renames, "model", ["model." + s for s in state]) == (
        ["model." + s for s in state],
        [],
    )
    # A first key that renames otherwise than its template: the caller renames key by key.
    renames["lm_head.weight"] = ("lm_head.weight", None, [], "head.weight", None)
    assert _core._renamed_keys(keys, renames, "model", state) is None
