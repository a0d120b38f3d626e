"""How many watches an api process serves, in all and per caller. Pure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class WatchLimits:
    """``admit`` a caller's new watch (None) or say why not; ``release`` when it ends."""

    total: int
    per_caller: int
    _open: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return sum(self._open.values())

    def admit(self, caller: str) -> str | None:
        if len(self) >= self.total:
            return f"this api process serves {self.total} watches at most (OCITAG_API_MAX_WATCHES)"
        if self._open[caller] >= self.per_caller:
            return (
                f"caller {caller} has {self.per_caller} watches open, the most one caller may "
                "(OCITAG_API_MAX_WATCHES_PER_CALLER)"
            )
        self._open[caller] += 1
        return None

    def release(self, caller: str) -> None:
        self._open[caller] -= 1
        if self._open[caller] <= 0:
            del self._open[caller]
