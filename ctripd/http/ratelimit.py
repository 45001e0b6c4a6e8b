"""Per-key rate limits: a token bucket per API key, in this process's memory.

A key may burst up to its quota, which refills evenly over the window. The state is per process
(no database write per request): N `ctripd run` processes allow a key up to N times its quota.
Answers carry the `RateLimit-Policy` and `RateLimit` fields of the IETF draft
(draft-ietf-httpapi-ratelimit-headers-10): `"default";q=<quota>;w=<window>` and
`"default";r=<remaining>;t=<seconds until the bucket is full again>`; a refusal is 429 with
`Retry-After`, the seconds until one request is allowed again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

POLICY = "default"


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    headers: dict[str, str]


class RateLimits:
    """Token buckets by key id. The clock is injectable so tests move time without sleeping."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._clock = clock

    def take(self, key_id: int, quota: int, window: int) -> Verdict:
        """Spend one request of the key's bucket if it has one."""
        now = self._clock()
        rate = quota / window
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(float(quota), now)
        bucket.tokens = min(float(quota), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        allowed = bucket.tokens >= 1
        if allowed:
            bucket.tokens -= 1
        headers = {
            "RateLimit-Policy": f'"{POLICY}";q={quota};w={window}',
            "RateLimit": f'"{POLICY}";r={math.floor(bucket.tokens)};'
            f"t={math.ceil((quota - bucket.tokens) / rate)}",
        }
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil((1 - bucket.tokens) / rate)))
        return Verdict(allowed, headers)
