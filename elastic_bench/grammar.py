"""The sweep grammar of METHODOLOGY.md: integer axes, name lists, memory sizes.

Integer axes (``--seq-len``, ``--batch``, ``--tokens-per-batch``, ``--experts``, ...) take a
comma list whose items are numbers or ranges::

    256..8192          powers of two from 256 to 8192 (a geometric step of 2)
    256..8192:x4       geometric step 4:   256, 1024, 4096
    256..2048:+256     arithmetic step:    256, 512, ..., 2048
    256,1k,4k          a list; suffixes k = 1024, m = 1024**2

Example::

    >>> parse_int_axis("256..1k,4k", "--seq-len")
    (256, 512, 1024, 4096)

Anything else raises :class:`GrammarError`, whose message is one line naming the argument
and the accepted forms (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import math
import re
from typing import Iterable

INT_FORMS = "accepted forms: 256 | 1k | 256,1k,4k | 256..8192 (powers of two) | 256..8192:x4 | 256..2048:+256 (k=1024, m=1024²)"
_NUMBER = re.compile(r"^(\d+)([km]?)$", re.IGNORECASE)
_RANGE = re.compile(r"^(.+?)\.\.(.+?)(?::([x+])(.+))?$")
_SUFFIX = {"": 1, "k": 1024, "m": 1024**2}
MEMORY_SIZE_EXAMPLES = "0 (no memory), 1k=32², 4k=64², 16k=128², 64k=256², 256k=512², 1m=1024²"


class GrammarError(ValueError):
    """Bad command-line input: a one-line message naming the argument and the accepted forms."""


def parse_number(token: str, arg: str, minimum: int = 1) -> int:
    """``"4k"`` -> 4096.  Whole numbers with an optional k/m suffix, at least ``minimum``."""
    tok = token.strip()
    m = _NUMBER.match(tok)
    if not m:
        raise GrammarError(f"{arg}: {token!r} is not a number; {INT_FORMS}")
    value = int(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if value < minimum:
        raise GrammarError(f"{arg}: {token!r} must be at least {minimum}; {INT_FORMS}")
    return value


def _expand_range(item: str, arg: str, minimum: int) -> list[int]:
    m = _RANGE.match(item)
    if not m:
        raise GrammarError(f"{arg}: malformed range {item!r}; {INT_FORMS}")
    start_s, stop_s, kind, step_s = m.groups()
    start = parse_number(start_s, arg, max(minimum, 1))
    stop = parse_number(stop_s, arg, max(minimum, 1))
    if stop < start:
        raise GrammarError(f"{arg}: range {item!r} runs backwards ({start} > {stop}); {INT_FORMS}")
    if kind is None or kind == "x":
        factor = 2 if kind is None else parse_number(step_s, arg, 1)
        if factor < 2:
            raise GrammarError(f"{arg}: geometric step in {item!r} must be x2 or more; {INT_FORMS}")
        out, v = [], start
        while v <= stop:
            out.append(v)
            v *= factor
        return out
    step = parse_number(step_s, arg, 1)
    return list(range(start, stop + 1, step))


def parse_int_axis(text: str | int | Iterable[int | str], arg: str, minimum: int = 1) -> tuple[int, ...]:
    """Expand one integer axis (see the module docstring); order kept, duplicates dropped."""
    if isinstance(text, bool):
        raise GrammarError(f"{arg}: {text!r} is not a number; {INT_FORMS}")
    if isinstance(text, int):
        items: list[str] = [str(text)]
    elif isinstance(text, str):
        items = text.split(",")
    else:
        items = [str(t) for t in text]
    values: list[int] = []
    for raw in items:
        item = raw.strip()
        if not item:
            raise GrammarError(f"{arg}: empty item in {text!r}; {INT_FORMS}")
        if item.startswith("-"):
            raise GrammarError(f"{arg}: {item!r} is negative; {INT_FORMS}")
        values.extend(_expand_range(item, arg, minimum) if ".." in item else [parse_number(item, arg, minimum)])
    out = tuple(dict.fromkeys(values))
    if not out:
        raise GrammarError(f"{arg}: no values in {text!r}; {INT_FORMS}")
    return out


def parse_memory_sizes(text: str | int | Iterable[int | str], arg: str = "--memory-size") -> tuple[int, ...]:
    """Memory sizes in slots: perfect squares (product keys) or 0 (static dispatchers)."""
    sizes = parse_int_axis(text, arg, minimum=0)
    for s in sizes:
        if math.isqrt(s) ** 2 != s:
            raise GrammarError(
                f"{arg}: {s} is not a perfect square (product keys need n² slots); accepted e.g. {MEMORY_SIZE_EXAMPLES}"
            )
    return sizes


def parse_name_list(text: str | Iterable[str], arg: str, choices: Iterable[str] | None = None) -> tuple[str, ...]:
    """A comma list of names, optionally restricted to ``choices``."""
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    names = tuple(dict.fromkeys(i.strip() for i in items if i.strip()))
    if not names:
        raise GrammarError(f"{arg}: empty list")
    if choices is not None:
        allowed = list(choices)
        for n in names:
            if n not in allowed:
                raise GrammarError(f"{arg}: unknown value {n!r}; accepted: {', '.join(allowed)} (comma list)")
    return names


def parse_float(text: str | float | int, arg: str, minimum: float = 0.0) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise GrammarError(f"{arg}: {text!r} is not a number (e.g. 0.5)") from None
    if not math.isfinite(value) or value < minimum:
        raise GrammarError(f"{arg}: {text!r} must be a finite number ≥ {minimum}")
    return value


def human_int(n: int) -> str:
    """4096 -> '4k', 65536 -> '64k', 1048576 -> '1m', 300 -> '300'."""
    if n and n % (1024**2) == 0:
        return f"{n // 1024**2}m"
    if n and n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)
