"""Words and rates for progress messages: "1 row", "12,345 lines in 0.8 s (15,431 lines/s)"."""

from __future__ import annotations

import time
from collections.abc import Callable

# Nouns whose plural is not noun + "s".
_IRREGULAR = {"entry": "entries", "copy": "copies", "this": "these", "is": "are", "was": "were"}


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """``n`` with thousands separators and the noun in the right number: "1 row", "0 rows", "1,234 rows"."""
    if n == 1:
        return f"1 {noun}"
    return f"{n:,} {plural_form or _IRREGULAR.get(noun) or noun + 's'}"


def rate(n: float, seconds: float, unit: str) -> str:
    """A throughput: "15,431 lines/s" (or "n/a" for no elapsed time)."""
    if seconds <= 0:
        return f"- {unit}/s"
    per_second = n / seconds
    if per_second >= 100:
        return f"{per_second:,.0f} {unit}/s"
    if per_second >= 1:
        return f"{per_second:,.1f} {unit}/s"
    return f"{per_second * 60:,.1f} {unit}/min"


def duration(seconds: float) -> str:
    """``0.8 s``, ``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Meter:
    """Counts work and reports it, with its rate, at most every ``every`` seconds (and once at the end)."""

    def __init__(self, say: Callable[[str], None] | None, what: str, unit: str, every: float = 5.0) -> None:
        self.say = say
        self.what = what
        self.unit = unit
        self.every = every
        self.count = 0
        self.started = time.monotonic()
        self._next = self.started + every

    def add(self, n: int = 1) -> None:
        self.count += n
        if self.say is not None and self.count % 4096 == 0:
            now = time.monotonic()
            if now >= self._next:
                self._next = now + self.every
                self.say(f"  {self.what}: {plural(self.count, self.unit)} so far ({rate(self.count, now - self.started, self.unit + 's')})")

    def done(self) -> str:
        """The final line: "<what>: 12,345 lines in 0.8 s (15,431 lines/s)"."""
        elapsed = time.monotonic() - self.started
        return f"{self.what}: {plural(self.count, self.unit)} in {duration(elapsed)} ({rate(self.count, elapsed, self.unit + 's')})"


def eta(done: int, total: int, elapsed: float, unit: str = "dates") -> str:
    """Progress through ``total`` items with the rate and the time left: "3/30 dates, 2.1 dates/min, about 13 min left"."""
    if done == 0 or elapsed <= 0:
        return f"{done}/{total} {unit}"
    left = (total - done) * elapsed / done
    return f"{done}/{total} {unit}, {rate(done, elapsed, unit)}, about {duration(left)} left"
