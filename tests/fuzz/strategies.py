"""Hypothesis strategies shared by the fuzz tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# RFC 6749 Appendix A, UNICODECHARNOCRLF: TAB, and everything from SP up but DEL, the
# surrogates and the two noncharacters U+FFFE/U+FFFF. The parsers accept exactly this.
NOT_TEXT = [chr(c) for c in range(0x20) if c != 0x09] + ["\x7f", "\ufffe", "\uffff"]
text_char = st.characters(exclude_categories=("Cs",), exclude_characters=NOT_TEXT)
text = st.text(text_char, max_size=40)
nonempty_text = st.text(text_char, min_size=1, max_size=40)

# Anything a str can hold, controls, NUL and lone surrogates included.
any_char = st.characters(codec=None)
any_text = st.text(max_size=60)
hostile_text = st.one_of(
    any_text,
    st.text(st.sampled_from(["\x00", "\r", "\n", "\t", "\ud800", "%", "+", "=", "&", " "])),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=60),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(any_text, children, max_size=5)
    ),
    max_leaves=20,
)
# What orjson can serialise and read back unchanged (no lone surrogates).
safe_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
safe_json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        safe_text,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(safe_text, children, max_size=4)
    ),
    max_leaves=15,
)

B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


CONTROL = st.sampled_from(["\x00", "\x00", "\x01", "\n", "\r", "\x1b", "\x7f", "\ufffe"])


def injected(values: list[str]) -> st.SearchStrategy[str]:
    """One of ``values`` with a control character (NUL most often) put somewhere in it."""
    return st.tuples(st.sampled_from(values), CONTROL, st.integers(0, 64)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
    )


def hostile_values(values: list[str]) -> st.SearchStrategy[str]:
    """A parameter value: one of ``values``, one of them with a control character in it,
    or anything at all."""
    return st.one_of(st.sampled_from(values), injected(values), hostile_text)
