"""CloudWatch Embedded Metric Format: metrics as structured log lines, no API call.

In Lambda, stdout goes to CloudWatch Logs, which extracts the metrics from these lines
asynchronously. That costs no round trip and no PutMetricData permission, which is why
it is the cheaper choice inside a handler; :mod:`sources.cloudwatch` is for workers
that do not log to CloudWatch.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

# EMF limits: 100 metrics per document and 100 values per metric.
MAX_METRICS_PER_DOCUMENT = 100
MAX_VALUES_PER_METRIC = 100

DimsKey = tuple[tuple[str, str], ...]


class EmfMetrics:
    def __init__(self, namespace: str, stream: TextIO | None = None):
        self.namespace = namespace
        self.stream = stream
        # dims -> metric name -> (unit, values)
        self._buffer: dict[DimsKey, dict[str, tuple[str, list[float]]]] = {}
        self._conflicts: list[tuple[DimsKey, str, str, float]] = []
        self._lock = threading.Lock()   # the threads of a batch count too (fsm.gather)

    def incr(self, name: str, value: float = 1.0, unit: str = "Count",
             dims: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._incr(name, value, unit, dims)

    def _incr(self, name: str, value: float, unit: str, dims: Mapping[str, str] | None) -> None:
        key: DimsKey = tuple(sorted((dims or {}).items()))
        metrics = self._buffer.setdefault(key, {})
        known_unit, values = metrics.setdefault(name, (unit, []))
        if known_unit != unit:
            # One name has one unit per document; a second unit gets its own line.
            self._conflicts.append((key, name, unit, value))
            return
        values.append(float(value))

    def flush(self) -> None:
        documents = list(self.documents())
        self._buffer.clear()
        self._conflicts.clear()
        if not documents:
            return
        # Resolved at flush time so a test (or Lambda's runtime) replacing sys.stdout
        # is honoured.
        stream = self.stream if self.stream is not None else sys.stdout
        for document in documents:
            stream.write(json.dumps(document, separators=(",", ":")) + "\n")
        stream.flush()

    def documents(self) -> list[dict[str, Any]]:
        """The EMF documents the buffer would be written as (one per dimension set)."""
        timestamp = int(time.time() * 1000)
        out: list[dict[str, Any]] = []
        for key, metrics in self._buffer.items():
            entries = [(name, unit, values) for name, (unit, values) in metrics.items() if values]
            out.extend(self._documents_for(key, entries, timestamp))
        for key, name, unit, value in self._conflicts:
            out.extend(self._documents_for(key, [(name, unit, [value])], timestamp))
        return out

    def _documents_for(self, key: DimsKey, entries: list[tuple[str, str, list[float]]],
                       timestamp: int) -> list[dict[str, Any]]:
        # Counts are summed (their total is all CloudWatch keeps anyway); other units
        # keep every value so percentiles survive, split when above the per-metric cap.
        chunks: list[tuple[str, str, float | list[float]]] = []
        for name, unit, values in entries:
            if unit == "Count":
                chunks.append((name, unit, sum(values)))
                continue
            for start in range(0, len(values), MAX_VALUES_PER_METRIC):
                part = values[start:start + MAX_VALUES_PER_METRIC]
                chunks.append((name, unit, part[0] if len(part) == 1 else part))
        documents = []
        # A name may appear twice (split values); each document needs unique names.
        while chunks:
            taken: dict[str, tuple[str, float | list[float]]] = {}
            rest = []
            for name, unit, value in chunks:
                if name in taken or len(taken) >= MAX_METRICS_PER_DOCUMENT:
                    rest.append((name, unit, value))
                else:
                    taken[name] = (unit, value)
            documents.append(self._document(key, taken, timestamp))
            chunks = rest
        return documents

    def _document(self, key: DimsKey, metrics: dict[str, tuple[str, float | list[float]]],
                  timestamp: int) -> dict[str, Any]:
        document: dict[str, Any] = {
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [[name for name, _ in key]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (unit, _) in metrics.items()],
                }],
            },
        }
        document.update(dict(key))
        document.update({name: value for name, (_, value) in metrics.items()})
        return document
