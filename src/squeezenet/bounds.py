"""Value ranges of numeric options, declared once: the library checks its arguments against
them and the command line turns each into an argparse type, so a bad value is a usage line
at parse time and both say the same thing (``--momentum must lie in [0, 1)``)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bounds:
    """Allowed values: ``low`` .. ``high`` (None: unbounded), each end open or closed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def contains(self, value: float) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return False
        if self.integer and value != int(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        """'at least 1', '0 or more', 'lie in [0, 1)', 'be positive'."""
        if self.high is None:
            if self.low is None:
                return "be a number"
            if self.low == 0 and self.low_open:
                return "be positive"
            if self.low_open:
                return f"be above {self.low:g}"
            return f"be at least {self.low:g}" if self.integer else f"be {self.low:g} or more"
        low = "-inf" if self.low is None else f"{self.low:g}"
        return f"lie in {'(' if self.low_open else '['}{low}, {self.high:g}{')' if self.high_open else ']'}"

    def expectation(self) -> str:
        """'a whole number >= 1', 'a number in (0, 1]'."""
        kind = "a whole number" if self.integer else "a number"
        if self.high is not None:
            return f"{kind} in {self.describe().removeprefix('lie in ')}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return kind

    def parse(self, text: str, alternatives: tuple[str, ...] = ()) -> int | float:
        """``text`` as a number in range; ``ValueError`` with the reason otherwise (naming the
        ``alternatives`` a caller also accepts)."""
        try:
            value: int | float = int(text) if self.integer else float(text)
        except ValueError:
            expected = " or ".join([self.expectation(), *map(repr, alternatives)])
            raise ValueError(f"expected {expected}, got {text!r}") from None
        if not self.contains(value):
            raise ValueError(f"must {self.describe()}, got {text}")
        return value


COUNT = Bounds(1, integer=True)  # a positive whole number: threads, batch sizes, epochs
NON_NEGATIVE_COUNT = Bounds(0, integer=True)
FRACTION_OPEN_CLOSED = Bounds(0.0, 1.0, low_open=True)  # (0, 1]: densities, split fractions
