"""Fault injection: what a real core does to its callers on a bad day, on demand.

Faults live in memory only: a restarted core comes back healthy, as a real one would after
its outage ends. The random generator can be seeded so a test or benchmark run with the same
seed and the same request order sees the same faults.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

RATES = ("error_rate", "error_after_commit_rate", "timeout_rate")


@dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0
    error_after_commit_rate: float = 0.0
    timeout_rate: float = 0.0
    hang_seconds: float = 30.0
    latency_ms: int = 0
    down: bool = False
    seed: int | None = None


class FaultsInvalid(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__(errors)


def _check(name: str, value: Any) -> str | None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if name in RATES and not (number and 0 <= value <= 1):
        return "A rate between 0 and 1."
    if name == "hang_seconds" and not (number and 0 <= value <= 3600):
        return "Seconds between 0 and 3600."
    if name == "latency_ms" and not (isinstance(value, int) and 0 <= value <= 600_000):
        return "Whole milliseconds between 0 and 600000."
    if name == "down" and not isinstance(value, bool):
        return "true or false."
    if name == "seed" and not (value is None or (isinstance(value, int) and number)):
        return "An integer, or null for an unseeded generator."
    return None


class FaultInjector:
    def __init__(self, seed: int | None = None):
        self.lock = threading.Lock()
        self.initial_seed = seed
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.faults = Faults(seed=self.initial_seed)
            self.random = random.Random(self.initial_seed)

    def current(self) -> Faults:
        return self.faults

    def update(self, changes: dict[str, Any]) -> Faults:
        """Apply a partial update; unknown names or bad values change nothing."""
        known = {field.name for field in fields(Faults)}
        errors = {}
        for name, value in changes.items():
            problem = f"Unknown fault; use one of {sorted(known)}." if name not in known else None
            problem = problem or _check(name, value)
            if problem:
                errors[name] = [problem]
        if errors:
            raise FaultsInvalid(errors)
        with self.lock:
            self.faults = replace(self.faults, **changes)
            if "seed" in changes:
                self.random = random.Random(changes["seed"])
        return self.faults

    def draw(self, rate_name: str) -> bool:
        """True when the fault named by `rate_name` strikes this request."""
        with self.lock:
            rate = getattr(self.faults, rate_name)
            return rate > 0 and self.random.random() < rate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.faults)
