"""A work queue with client-go's guarantees, for asyncio.

- a key is processed by one worker at a time;
- a key added while it is queued is queued once; added while it is being processed, it
  is processed again afterwards (so the last state is always handled);
- `add_after` requeues with a delay, `failed` with per-key exponential backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, *, base_delay: float = 0.5, max_delay: float = 60.0) -> None:
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay

    def add(self, key: K) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def ensure(self, key: K) -> None:
        """Queue `key` unless it is already queued, being processed, or due later."""
        if key not in self._timers and key not in self._queued and key not in self._processing:
            self.add(key)

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` in `delay` seconds, unless an earlier wake-up is already set."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        when = loop.time() + delay
        if existing is not None and existing.when() <= when:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> K:
        key = await self._ready.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    @property
    def processing(self) -> frozenset[K]:
        """The keys workers hold now."""
        return frozenset(self._processing)

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def succeeded(self, key: K) -> None:
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """Consecutive failures of the key's passes so far."""
        return self._failures.get(key, 0)

    def failed(self, key: K) -> float:
        """Requeue after a backoff that doubles with each consecutive failure; returns it."""
        count = self._failures.get(key, 0)
        self._failures[key] = count + 1
        delay = min(self._base_delay * float(2**count), self._max_delay)
        self.add_after(key, delay)
        return delay

    def __len__(self) -> int:
        return len(self._queued) + len(self._processing)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
