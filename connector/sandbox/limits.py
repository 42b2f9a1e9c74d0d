"""Rate limits, token bookkeeping and injected faults: the sandbox's rules about requests.

None of these classes lock; the server holds its one lock around every call.
"""

from __future__ import annotations

import random
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from connector.sandbox.settings import Faults


class RateLimiter:
    """At most `rate` requests per key in any sliding window (1 s, or 1/rate s when rate < 1).

    Only allowed requests are remembered, so a client answered 429 is not punished further.
    """

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._seen: dict[object, deque[float]] = {}

    def allow(self, key: object, rate: float) -> bool:
        """True, and remembered, when one more request by `key` fits within `rate` per second."""
        count = max(1, int(rate))
        window = count / rate  # rate 3 -> 3 per 1.0 s; rate 0.5 -> 1 per 2.0 s
        now = self._clock()
        seen = self._seen.setdefault(key, deque())
        while seen and now - seen[0] >= window:
            seen.popleft()
        if len(seen) >= count:
            return False
        seen.append(now)
        return True

    def clear(self) -> None:
        self._seen.clear()


class Observed:
    """Requests per second actually seen (all clients), for the stats."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self.clear()

    def clear(self) -> None:
        self._recent: deque[float] = deque()
        self.max_per_second = 0

    def arrive(self) -> None:
        now = self._clock()
        self._recent.append(now)
        while now - self._recent[0] >= 1.0:
            self._recent.popleft()
        self.max_per_second = max(self.max_per_second, len(self._recent))


@dataclass
class _Token:
    username: str
    issued: float
    uses: int = 0


class Tokens:
    """Issued tokens: one live token per user; a new authenticate kills the user's old ones."""

    def __init__(self, users: dict[str, str], lifetime: float | None, clock: Callable[[], float]):
        self._users = dict(users)
        self._lifetime = lifetime
        self._clock = clock
        self._live: dict[str, _Token] = {}

    def authenticate(self, username: object, password: object) -> str | None:
        """A fresh token for a right username and password, else None."""
        if not isinstance(username, str) or not isinstance(password, str):
            return None
        expected = self._users.get(username)
        if expected is None or not secrets.compare_digest(expected.encode(), password.encode()):
            return None
        for token in [t for t, info in self._live.items() if info.username == username]:
            del self._live[token]
        token = secrets.token_hex(20)
        self._live[token] = _Token(username, self._clock())
        return token

    def user(self, token: str | None) -> str | None:
        """The username a live token belongs to, else None (expired tokens are forgotten)."""
        key = token or ""
        info = self._live.get(key)
        if info is None:
            return None
        if self._lifetime is not None and self._clock() - info.issued >= self._lifetime:
            del self._live[key]
            return None
        return info.username

    def use(self, token: str, expire_after: int) -> bool:
        """Count one use of a live token on a fault path; False (and the token dies) when it has
        already served `expire_after` such requests. 0 means no limit."""
        info = self._live[token]
        info.uses += 1
        if expire_after and info.uses > expire_after:
            del self._live[token]
            return False
        return True


@dataclass
class Decision:
    """What the faults do to one request: 429 burst, an error status, a drop, a delay."""

    burst: bool = False
    error_status: int | None = None
    drop: bool = False
    latency: float = 0.0


class FaultPlan:
    """Decides, reproducibly from the seed, which fault (if any) each request on a fault path gets.

    Every eligible request draws the same random numbers whatever happens to it, so a given
    sequence of requests always meets the same faults.
    """

    def __init__(self, faults: Faults):
        self.faults = faults
        self._random = random.Random(faults.seed)
        self._items = random.Random(faults.seed)  # its own stream: the requests' faults stay as they were
        self._count = 0

    def applies(self, path: str) -> bool:
        return path in self.faults.paths

    def fails_in_queue(self) -> bool:
        """Whether the queue fails the next item it took (after acknowledging it): queue_fail_rate."""
        return self.faults.queue_fail_rate > 0 and self._items.random() < self.faults.queue_fail_rate

    def decide(self) -> Decision:
        f = self.faults
        self._count += 1
        error_draw, status_draw, drop_draw = self._random.random(), self._random.random(), self._random.random()
        cycle = f.burst_every + f.burst_size
        burst = bool(f.burst_every and f.burst_size) and (self._count - 1) % cycle >= f.burst_every
        error_status = None
        if error_draw < f.error_rate:
            error_status = f.error_statuses[int(status_draw * len(f.error_statuses))]
        return Decision(burst=burst, error_status=error_status, drop=drop_draw < f.drop_rate,
                        latency=f.latency)
