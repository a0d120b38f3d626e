"""The api's two per-caller doors, each decided before anything is read or published:
the rate limit (429 with ``Retry-After``) and the grants (403 ``forbidden``). The
decisions are ``grants`` and ``ratelimit``'s (pure); this counts them.

A refusal is counted by caller and result (``ocitag_api_caller_requests``); callers are
the names ``OCITAG_API_TOKENS`` configures, so the label's values are bounded by that
list (a bare token's caller is ``token-<12 hex>`` of its digest: an identity, never
the token).
"""

from __future__ import annotations

from collections.abc import Callable

from worker import metrics
from worker.api.grants import SETTING, Action, Grants, may_read, parse_grants
from worker.api.problems import ApiProblem
from worker.api.ratelimit import RateLimiter, parse_rate_limit, retry_after
from worker.documents import DocumentError
from worker.errors import SettingsError
from worker.problems import ErrorItem, ProblemKind
from worker.settings import Settings


class Access:
    def __init__(self, grants: Grants, limiter: RateLimiter) -> None:
        self.grants = grants
        self._limiter = limiter

    def admit(self, caller: str) -> None:
        """The caller's next request, or 429 when its bucket is empty."""
        wait = self._limiter.wait(caller)
        if wait > 0:
            metrics.API_CALLER_REQUESTS.labels(caller, "rate_limited").inc()
            seconds = retry_after(wait)
            raise ApiProblem(
                ProblemKind.RATE_LIMITED,
                f"over OCITAG_API_RATE_LIMIT for caller {caller}; nothing was done: "
                f"retry after {seconds} s",
                retry_after=seconds,
            )

    def require(self, caller: str, action: Action, ocitag_id: str) -> None:
        """403 unless the caller's grants allow ``action`` on ``ocitag_id``: from the
        pattern alone, so the answer never says whether the tag exists."""
        if not self.grants.allows(caller, action, ocitag_id):
            raise self._forbidden(caller, action, "path.tag", ocitag_id)
        metrics.API_CALLER_REQUESTS.labels(caller, "allowed").inc()

    def require_any(self, caller: str, action: Action, location: str, value: str) -> None:
        """403 unless the caller holds some grant of ``action`` (a list: its items are
        then filtered one by one)."""
        if not self.grants.may_ever(caller, action):
            raise self._forbidden(caller, action, location, value)
        metrics.API_CALLER_REQUESTS.labels(caller, "allowed").inc()

    def reader(self, caller: str) -> Callable[[str], bool]:
        return may_read(self.grants, caller)

    @staticmethod
    def _forbidden(caller: str, action: Action, location: str, value: str) -> ApiProblem:
        metrics.API_CALLER_REQUESTS.labels(caller, "forbidden").inc()
        message = f"outside the {action} grants of caller {caller}"
        return ApiProblem(
            ProblemKind.FORBIDDEN,
            f"caller {caller} may not {action} this (OCITAG_API_GRANTS); nothing was done",
            (ErrorItem(location, message, value),),
        )


def access_from_settings(settings: Settings, clock: Callable[[], float]) -> Access:
    """The grants and the rate limit of the settings; SettingsError naming the setting
    and the JSON place of a broken grants document (start-up stops, exit 2)."""
    raw = settings.api.api_grants
    try:
        grants = parse_grants(raw) if raw is not None else Grants.everyone()
    except DocumentError as exc:
        raise SettingsError(f"invalid setting {SETTING}: {exc}") from None
    try:
        limit = parse_rate_limit(settings.api.api_rate_limit)
    except ValueError as exc:  # e.g. 5/0: the pattern lets a zero period through
        raise SettingsError(f"invalid setting OCITAG_API_RATE_LIMIT: {exc}") from None
    return Access(grants, RateLimiter(limit, clock))
