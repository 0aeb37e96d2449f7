"""Input text as messages show it: Python's `repr`, cut so a message never grows with its input.

The same rule as the Rust core's (`src/error.rs`, `quoted`): 60 characters, then the length.
"""

from __future__ import annotations

SHOWN_CHARS = 60


def shown(value: object) -> str:
    """`repr(value)`; a `str` longer than SHOWN_CHARS is cut and its length given."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def check_str(name: str, value: object, optional: bool = False) -> None:
    """A `TypeError` naming the argument when `value` is not a str (nor `None`, if optional),
    rather than pyo3's "'int' object is not an instance of 'str'", which names none."""
    if not isinstance(value, str) and not (optional and value is None):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {shown(value)}")
