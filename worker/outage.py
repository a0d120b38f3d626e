"""When a dependency (Kafka, PostgreSQL) is away, what to log. Pure: the clock is an
argument, the answer a value; worker/reachability.py does the logging and the gauge.

An outage is one state change, not one line per failed attempt (the Kafka client alone
fails about 70 times a second per process while the broker is away). So:

- the first failure after a quiet spell *starts* an outage: one line, with the error;
- while it lasts, failures are counted, and at most one *ongoing* line per ``every``
  seconds says how many were swallowed since the previous line;
- the first success *ends* it: one line, with its duration.

A dependency that flaps (up for a moment, down again: one broker of several away, its
connections failing while metadata refreshes succeed) would still print a start and an
end per flap. A failure less than ``every`` seconds after the line that said "ended"
therefore reopens that outage without a line (it keeps its start time), and its end is
said only if a line said "down" since; so however it flaps, a few lines per ``every``.

Written here: it is a dozen lines of state, and log-rate limiters (for instance
``logging`` filters that drop repeats) drop lines but cannot say when an outage ended or
how long it lasted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Change(StrEnum):
    STARTED = "started"
    ONGOING = "ongoing"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Report:
    """One line to log. ``errors``: failures swallowed since the previous line (the one
    that started it included); ``seconds``: how long the outage has lasted (so far, or
    in all when it ended); ``error``: the latest failure."""

    change: Change
    errors: int
    seconds: float
    error: str


class OutageTracker:
    """The state of one dependency, fed with failures and successes as they happen."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.down = False
        self._since = 0.0  # when the current (or last) outage started
        self._errors = 0  # failures since the last line
        self._error = ""
        self._said: Change | None = None  # what the last line said
        self._said_at = 0.0

    def failed(self, now: float, error: str) -> Report | None:
        self._errors += 1
        self._error = error
        if not self.down:
            self.down = True
            reopened = self._said is Change.ENDED and now - self._said_at < self.every
            if not reopened:
                self._since = now
                return self._say(Change.STARTED, now)
        if now - self._said_at >= self.every:
            return self._say(Change.ONGOING, now)
        return None

    def succeeded(self, now: float) -> Report | None:
        if not self.down:
            return None
        self.down = False
        if self._said is Change.ENDED:  # a reopened outage that no line called "down"
            return None
        return self._say(Change.ENDED, now)

    def _say(self, change: Change, now: float) -> Report:
        report = Report(change, self._errors, now - self._since, self._error)
        self._errors = 0
        self._said, self._said_at = change, now
        return report
