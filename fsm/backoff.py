"""Full-jitter exponential backoff: ``uniform(0, min(cap, base * 2**attempt))``.

Full jitter spreads retries of many instances that failed together (a backend outage)
instead of having them all come back at the same moment.
"""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    ceiling = min(cap, base * 2 ** min(attempt, 62))
    return (rng or random).uniform(0, ceiling)
