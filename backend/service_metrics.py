"""Counters of one backend process for GET /metrics: requests, predictions, errors, model latency."""

from __future__ import annotations

import statistics
import threading
from collections import Counter, deque


class ServiceMetrics:
    """Thread-safe counters; model latencies are kept for the last `latency_window` calls only."""

    def __init__(self, latency_window: int = 1000) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._status_classes: Counter[str] = Counter()
        self._predictions = 0
        self._failed_tasks: Counter[str] = Counter()
        self._model_calls = 0
        self._model_seconds_total = 0.0
        self._recent_model_seconds: deque[float] = deque(maxlen=latency_window)

    def count_request(self, endpoint: str) -> None:
        """One request arrived at `endpoint` (e.g. "/predict")."""
        with self._lock:
            self._requests[endpoint] += 1

    def count_response(self, status_code: int) -> None:
        """One response left with `status_code`."""
        with self._lock:
            self._status_classes[f"{status_code // 100}xx"] += 1

    def count_predictions(self, count: int) -> None:
        """`count` prediction items were returned."""
        with self._lock:
            self._predictions += count

    def count_failed_task(self, reason: str) -> None:
        """One task got no prediction because its image or data could not be used (`reason`: a SkipCode value)."""
        with self._lock:
            self._failed_tasks[reason] += 1

    def record_model_call(self, seconds: float, calls: int = 1) -> None:
        """`calls` model calls on one image took `seconds` together."""
        with self._lock:
            self._model_calls += calls
            self._model_seconds_total += seconds
            self._recent_model_seconds.extend([seconds / max(calls, 1)] * calls)

    def snapshot(self) -> dict[str, object]:
        """All counters as a JSON-ready dict; latencies in milliseconds, None before the first call."""
        with self._lock:
            recent = list(self._recent_model_seconds)
            return {
                "requests": dict(self._requests),
                "responses": dict(self._status_classes),
                "errors": self._status_classes["4xx"] + self._status_classes["5xx"],
                "predictions": self._predictions,
                "failed_tasks": sum(self._failed_tasks.values()),
                "failed_tasks_by_reason": dict(self._failed_tasks),
                "model_calls": self._model_calls,
                "model_latency_ms": {
                    "mean": (
                        1000 * self._model_seconds_total / self._model_calls
                        if self._model_calls
                        else None
                    ),
                    "p50": 1000 * statistics.median(recent) if recent else None,
                },
            }
