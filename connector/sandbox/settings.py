"""What a sandbox run is configured with: users, rate limits, token lifetime and faults.

    SandboxConfig(rate=1.0, faults=Faults(seed=7, error_rate=0.2))

Plain data; the server reads it, never changes it (faults are swapped whole with
`Sandbox.set_faults`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

QUEUE_PATHS = ("/v1/products/queue", "/v1/images/queue")
RETRY_AFTER_CHOICES = ("none", "seconds", "date")


@dataclass(frozen=True)
class Faults:
    """Trouble the sandbox makes on purpose, reproducible from `seed`.

    Faults apply only to requests whose path is in `paths` (default: the two queue endpoints).
    - error_rate: share of requests answered 500/502/503 without being processed.
    - burst_every / burst_size: after every `burst_every` requests, `burst_size` requests are
      answered 429; `retry_after` says how Retry-After is sent: "none", "seconds" or "date"
      (an HTTP date), `retry_after_seconds` long.
    - latency: seconds added before answering.
    - drop_rate: share of requests that are processed and then get no answer at all (the
      connection is closed).
    - expire_after: a token dies after serving this many requests on the fault paths.
    - anonymous_errors: a refused queue request is answered 400 without naming the bad items
      (the real API's error format is not published; the connector must cope with either).
    - queue_fail_rate: share of queued items (products and images) acknowledged with 200 and
      then failed by the queue: never stored, logged `failed` in the queue log (the real queue
      is asynchronous and loses such items without a word; `connector verify` finds them).
    """

    seed: int | None = 0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    burst_every: int = 0
    burst_size: int = 0
    retry_after: str = "none"
    retry_after_seconds: int = 1
    latency: float = 0.0
    drop_rate: float = 0.0
    expire_after: int = 0
    anonymous_errors: bool = False
    queue_fail_rate: float = 0.0
    paths: tuple[str, ...] = QUEUE_PATHS

    def __post_init__(self) -> None:
        problems = []
        for name in ("error_rate", "drop_rate", "queue_fail_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be between 0 and 1")
        for name in ("burst_every", "burst_size", "expire_after", "retry_after_seconds"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        if self.latency < 0:
            problems.append("latency must not be negative")
        if self.retry_after not in RETRY_AFTER_CHOICES:
            problems.append(f"retry_after must be one of {', '.join(RETRY_AFTER_CHOICES)}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class SandboxConfig:
    """Users (username -> password), the one source, the channels, limits, faults and the clock.

    rate / unauth_rate: requests allowed per second per client token (authenticated endpoints)
    and per client address (authenticate, valid_token). token_lifetime: seconds a token lives,
    None for until the next authenticate. clock: monotonic seconds, injectable for tests.
    channels: how many channels the users have (ids channel_id, channel_id + 1, ...).
    search_needs_channel: the users are not admins: POST /v1/products/elastic_search finds
    nothing without a `channel_id` query parameter naming one of their channels (api-docs:
    "depending on which user role is assigned, the query param channel_id would need to be
    specified to return results").
    channel_narrows_search: a `channel_id` query parameter narrows POST /v1/products/elastic_search
    to the products linked to that channel (a product's `channels`), and the queue links products
    to none: an admin whose products are not linked to the account's channel sees them only
    without one (with search_needs_channel too, no search finds anything).
    """

    rate: float = 3.0
    unauth_rate: float = 1.0
    users: dict[str, str] = field(default_factory=lambda: {"demo": "demo"})
    source_id: int = 1
    channel_id: int = 1
    channels: int = 1
    search_needs_channel: bool = False
    channel_narrows_search: bool = False
    client_id: int = 1
    token_lifetime: float | None = None
    faults: Faults = field(default_factory=Faults)
    max_body_bytes: int = 64 * 1024 * 1024
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.unauth_rate <= 0:
            raise ValueError("rate and unauth_rate must be above 0")
        if self.token_lifetime is not None and self.token_lifetime <= 0:
            raise ValueError("token_lifetime must be above 0 (or None for no lifetime)")
        if not self.users:
            raise ValueError("at least one user is needed")
        if self.channels < 1:
            raise ValueError("channels must be at least 1")

    @property
    def channel_ids(self) -> list[int]:
        """The ids of the users' channels, in the order GET /v1/channels lists them."""
        return [self.channel_id + n for n in range(self.channels)]
