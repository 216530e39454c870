"""The rules every request parameter obeys, wherever it arrives (a token endpoint body, the
authorize query, a page's form): RFC 6749 §3.1 and §3.2, Appendix A.

- "Request and response parameters MUST NOT be included more than once" (§3.1, §3.2): a
  repeated name is a problem, an empty repetition included (``client_id=&client_id=x``).
- "Parameters sent without a value MUST be treated as if they were omitted" (§3.1).
- Every name and value is text of Appendix A's widest class, UNICODECHARNOCRLF: no NUL or
  other control character but TAB, no lone surrogate, no noncharacter U+FFFE/U+FFFF. Such
  input never reaches storage (PostgreSQL text cannot hold NUL; a lone surrogate is not
  UTF-8) nor a page or a redirect.

``check`` reports every problem by parameter name instead of raising, so that the caller
chooses the answer: the token endpoint refuses the first with ``invalid_request``; the
authorize endpoint must tell a problem with ``client_id`` or ``redirect_uri`` (an error page,
never a redirect) from any other (a redirect to the verified URI, RFC 6749 §4.1.2.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# RFC 6749 Appendix A: UNICODECHARNOCRLF = %x09 / %x20-7E / %x80-D7FF / %xE000-FFFD /
# %x10000-10FFFF. Its complement, searched for:
_NOT_UNICODECHARNOCRLF = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def is_text(value: str) -> bool:
    """``value`` is a string of UNICODECHARNOCRLF characters (or empty)."""
    return _NOT_UNICODECHARNOCRLF.search(value) is None


def safe_name(name: str) -> str:
    """A parameter name as echoed in an error description: short and printable only."""
    return name if name.isascii() and name.isprintable() and len(name) <= 40 else "a"


@dataclass(frozen=True, slots=True)
class Params:
    """``values``: the non-empty value of every well-formed parameter sent once.
    ``problems``: each malformed or repeated parameter's name, with a public description of
    what is wrong with it (in the order met)."""

    values: dict[str, str]
    problems: dict[str, str]

    def first_problem(self) -> str | None:
        return next(iter(self.problems.values()), None)


def check(pairs: Iterable[tuple[str, str]]) -> Params:
    values: dict[str, str] = {}
    problems: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            problems.setdefault(name, f"The {safe_name(name)} parameter is repeated.")
            values.pop(name, None)
            continue
        seen.add(name)
        if not is_text(name) or not is_text(value):
            problems[name] = (
                f"The {safe_name(name)} parameter contains a character that is not allowed."
            )
        elif value != "":
            values[name] = value
    return Params(values, problems)
