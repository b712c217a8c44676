"""How many API requests the emulator answered, per command (emulator-specific, for tests).

Counted: every request that named a known command, whatever its outcome (a refused or
fault-injected one too), under any path form (``MultiCluster/``, ``AllClusters/``,
``RemoteCommand/<x>/``). Not counted: admin requests, unauthenticated requests, unknown
commands. Read with ``GET _emulator/requests`` or `Emulator.request_counts()`.
"""

from __future__ import annotations

import threading
from collections import Counter


class RequestCounts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, command: str) -> None:
        with self._lock:
            self._counts[command] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))

    def reset(self) -> dict[str, int]:
        """Start counting from zero; returns the counts until now."""
        with self._lock:
            before = dict(sorted(self._counts.items()))
            self._counts.clear()
            return before

    def to_json(self) -> dict[str, object]:
        counts = self.snapshot()
        return {"counts": counts, "total": sum(counts.values())}
