"""Numbers from users: one grammar and one range check for every flag and config value.

A number a user types is read strictly: ASCII digits (``٣``, ``３``, ``1_000``, ``0x10``, ``1e3`` for
an integer, and surrounding spaces are refused, where Python's ``int()``/``float()`` would accept
some of them), finite (``nan``, ``inf`` and overflowing values like ``1e400`` are refused for every
float), and inside the :class:`Bounds` of its quantity. Upper bounds are there where a larger value
can only be a mistake (a PUE of 1e308, a seed beyond what a random generator takes), so a wrong value
stops at the door with one line naming the flag or key, instead of overflowing later.

>>> SEED = Bounds(integer=True, lo=0, hi=2**32 - 1)
>>> SEED.parse("42", "--seed")
42
>>> SEED.parse("99999999999999999999", "--seed")
Traceback (most recent call last):
...
greendiff.errors.UserInputError: --seed must be >= 0 and at most 4294967295, got '99999999999999999999'
>>> Bounds(lo=0, lo_open=True).parse("nan", "--pue")
Traceback (most recent call last):
...
greendiff.errors.UserInputError: --pue must be a finite number, got 'nan'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from greendiff.errors import UserInputError
from greendiff.names import shown

#: Seeds are 32-bit: NumPy's generators take at most 2**32 - 1, and the derived seeds the trainer
#: computes from them (``seed * 1_000_003 + epoch`` ...) then stay far inside torch's 64-bit range.
MAX_SEED = 2**32 - 1
#: Steps, samples and intervals beyond a billion are typing mistakes, and would overflow derived seeds.
MAX_COUNT = 10**9
#: A ledger run id is an SQLite INTEGER.
MAX_ROW_ID = 2**63 - 1

#: Longest number text read: no quantity needs more than 20 integer digits (2**63 - 1 has 19), and a
#: decimal of 100 characters is still exact to a float's precision; more is a pasting mistake, which
#: must stop here (Python's ``int()`` refuses strings over 4,300 digits with a ValueError).
MAX_INT_DIGITS = 40
MAX_FLOAT_CHARS = 100

_INT = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)\Z", re.IGNORECASE)


def _hint(text: str, integer: bool) -> str:
    """Why a string is not read as a number, when the reason is not obvious from it."""
    if text != text.strip():
        return " (remove the spaces)"
    if not text.isascii():
        return " (use the ASCII digits 0-9)"
    if "_" in text:
        return " (write it without '_')"
    if "," in text:
        return " (without ',': use '.' for a decimal point)"
    if text.lower().startswith(("0x", "-0x", "+0x", "0o", "0b")):
        return " (write it in decimal)"
    if integer and _FLOAT.match(text):
        return " (a whole number, written out in digits)"
    return ""


def _fmt(number: float) -> str:
    if isinstance(number, int):
        return str(number)
    return str(int(number)) if number.is_integer() and abs(number) < 1e16 else f"{number:g}"


@dataclass(frozen=True)
class Bounds:
    """The accepted values of one quantity.

    Args:
        integer: Whole numbers only (else any finite float).
        lo, hi: The smallest and largest values (None: no limit); excluded when ``lo_open``/``hi_open``.
        why: Why ``hi`` is the limit, said when a value is over it.
        phrase: Says what the value must be instead of the generated text (e.g. ``"between 0 and 1"``).
    """

    integer: bool = False
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""
    phrase: str = ""

    def describe(self) -> str:
        """What the value must be, e.g. ``"a positive integer up to 1000000000"``."""
        if self.phrase:
            return self.phrase
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None and self.lo_open and self.hi_open:
            return f"in ({_fmt(lo)}, {_fmt(hi)})"
        noun = "integer" if self.integer else "number"
        if lo == 0 and self.lo_open or self.integer and lo == 1 and not self.lo_open:
            lower = f"a positive {noun}"
        elif lo is not None:
            lower = f"{'>' if self.lo_open else '>='} {_fmt(lo)}"
        else:
            lower = ""
        if hi is None:
            return lower or f"a finite {noun}"
        upper = f"{'below' if self.hi_open else 'at most'} {_fmt(hi)}"
        if lower.startswith("a "):
            return f"{lower} {'below' if self.hi_open else 'up to'} {_fmt(hi)}"
        return f"{lower} and {upper}" if lower else f"a {noun} {upper}"

    def contains(self, number: float) -> bool:
        if self.lo is not None and (number <= self.lo if self.lo_open else number < self.lo):
            return False
        return not (self.hi is not None and (number >= self.hi if self.hi_open else number > self.hi))

    def check(self, number: int | float, what: str, given: object = None) -> int | float:
        """``number`` if it is in range, else a one-line error (``given``: the value as the user wrote it)."""
        if self.contains(number):
            return number
        over = self.hi is not None and number > self.hi
        why = f" ({self.why})" if over and self.why else ""
        raise UserInputError(f"{what} must be {self.describe()}, got {shown(number if given is None else given)}{why}")

    def parse(self, value: object, what: str) -> int | float:
        """A number from a flag's text, a config value or an environment variable, in range."""
        number = parse_int(value, what) if self.integer else parse_float(value, what)
        return self.check(number, what, value if isinstance(value, str) else None)


def parse_int(value: object, what: str, expected: str = "an integer") -> int:
    """An integer: a TOML/JSON integer, or ASCII decimal digits with an optional sign (``expected``: what
    the message says the value must be, when it is not an integer)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT.match(value):
        if len(value.lstrip("+-")) > MAX_INT_DIGITS:
            raise UserInputError(f"{what} has too many digits ({len(value.lstrip('+-')):,}; at most {MAX_INT_DIGITS}), "
                                 f"got {shown(value)}")
        return int(value)
    hint = _hint(value, True) if isinstance(value, str) else ""
    raise UserInputError(f"{what} must be {expected}, got {shown(value)}{hint}")


def parse_float(value: object, what: str) -> float:
    """A finite float: a TOML/JSON number, or a decimal number (``1.5``, ``2e-3``) in ASCII."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserInputError(f"{what} must be a number, got {shown(value)}")
    if isinstance(value, str):
        if len(value) > MAX_FLOAT_CHARS:
            raise UserInputError(f"{what} has too many digits ({len(value):,} characters; at most {MAX_FLOAT_CHARS}), "
                                 f"got {shown(value)}")
        if _NOT_FINITE.match(value):
            raise UserInputError(f"{what} must be a finite number, got {shown(value)}")
        if not _FLOAT.match(value):
            raise UserInputError(f"{what} must be a number, got {shown(value)}{_hint(value, False)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise UserInputError(f"{what} must be a finite number, got {shown(value)}")
    if number == 0 and isinstance(value, str) and re.search(r"[1-9]", value.lower().split("e")[0]):
        raise UserInputError(f"{what} {shown(value)} is too small to represent (it would be read as 0)")
    return number


#: Quantities several commands and config keys share.
SEED = Bounds(integer=True, lo=0, hi=MAX_SEED)
COUNT = Bounds(integer=True, lo=1, hi=MAX_COUNT)  #: steps, images, intervals: 1 to a billion
COUNT0 = Bounds(integer=True, lo=0, hi=MAX_COUNT)  #: the same, 0 allowed (0: off, or the default)
ROW_ID = Bounds(integer=True, lo=1, hi=MAX_ROW_ID)  #: a ledger run id
MAX_ENERGY_KWH = 1e9
ENERGY_KWH = Bounds(lo=0, hi=MAX_ENERGY_KWH, why="1 TWh, more than any training run has used")  #: 0 allowed
#: A leap year's 8,784 h: the longest plan window, wait or pause (a longer one is a mistake).
HOURS_IN_A_YEAR = 366 * 24
YEAR_HOURS = Bounds(lo=0, lo_open=True, hi=HOURS_IN_A_YEAR, why="a plan covers at most a year")
