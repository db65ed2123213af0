"""CloudWatch PutMetricData, buffered per invocation.

``incr`` never does I/O: a transition must not pay a round trip per metric. Equal
(name, dimensions, unit) samples are folded into one datum carrying ``Values`` and
``Counts``, and ``flush`` (once, at the end of a Lambda invocation or a worker poll)
sends the buffer in as few PutMetricData calls as the API limits allow.

Metrics are best effort: a failed flush is logged (error class and code only, never
dimension values, which may hold instance ids) and the buffer is dropped rather than
growing across invocations of a warm Lambda.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

# PutMetricData limits: 1000 datums per call, 150 distinct values per datum, and a
# 1 MB request. The request size is estimated for the most verbose wire format
# (query: ``MetricData.member.N.Dimensions.member.M.Name=...``) with headroom.
MAX_DATUMS_PER_CALL = 1000
MAX_VALUES_PER_DATUM = 150
MAX_REQUEST_BYTES = 1_000_000
REQUEST_HEADROOM_BYTES = 50_000

log = logging.getLogger("fsm.metrics")

DatumKey = tuple[str, tuple[tuple[str, str], ...], str]


class CloudWatchMetrics:
    def __init__(self, namespace: str, *, client: Any = None, endpoint_url: str | None = None,
                 aws: Mapping[str, Any] | None = None, region: str | None = None):
        self.namespace = namespace
        self._client = client
        self._endpoint_url, self._aws, self._region = endpoint_url, aws, region
        # (name, dims, unit) -> value -> how many times it was seen
        self._buffer: dict[DatumKey, dict[float, int]] = {}
        self.calls = 0        # PutMetricData calls made, for tests and benchmarks
        self.dropped = 0      # datums lost to failed flushes
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            from sources import aws  # lazy: boto3 is an optional extra
            self._client = aws.make_client("cloudwatch", region=self._region,
                                           endpoint_url=self._endpoint_url, aws=self._aws)
        return self._client

    def incr(self, name: str, value: float = 1.0, unit: str = "Count",
             dims: Mapping[str, str] | None = None) -> None:
        key: DatumKey = (name, tuple(sorted((dims or {}).items())), unit)
        with self._lock:    # the threads of a batch count too (fsm.gather)
            counts = self._buffer.setdefault(key, {})
            counts[float(value)] = counts.get(float(value), 0) + 1

    def flush(self) -> None:
        datums = self.datums()
        self._buffer.clear()
        for request in self.requests(datums):
            try:
                self.client.put_metric_data(Namespace=self.namespace, MetricData=request)
                self.calls += 1
            except Exception as exc:  # noqa: BLE001 - metrics must never fail the transition
                self.dropped += len(request)
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                log.warning("PutMetricData to namespace %s failed (%s %s); %d datums dropped",
                            self.namespace, type(exc).__name__, code, len(request))

    def datums(self) -> list[dict[str, Any]]:
        """The buffer as MetricData entries, at most 150 distinct values each."""
        now = dt.datetime.now(dt.UTC)
        out: list[dict[str, Any]] = []
        for (name, dims, unit), counts in self._buffer.items():
            pairs = sorted(counts.items())
            for start in range(0, len(pairs), MAX_VALUES_PER_DATUM):
                chunk = pairs[start:start + MAX_VALUES_PER_DATUM]
                out.append({
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims],
                    "Timestamp": now,
                    "Unit": unit,
                    "Values": [value for value, _ in chunk],
                    "Counts": [float(count) for _, count in chunk],
                })
        return out

    def requests(self, datums: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Split ``datums`` into the fewest calls within the count and size limits."""
        budget = MAX_REQUEST_BYTES - REQUEST_HEADROOM_BYTES
        calls: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        size = _encoded_size({"Namespace": self.namespace})
        for datum in datums:
            datum_size = _encoded_size(datum, "MetricData.member.1000")   # the longest index
            if current and (len(current) >= MAX_DATUMS_PER_CALL or size + datum_size > budget):
                calls.append(current)
                current, size = [], _encoded_size({"Namespace": self.namespace})
            current.append(datum)
            size += datum_size
        if current:
            calls.append(current)
        return calls


def _encoded_size(value: Any, prefix: str = "") -> int:
    """Bytes ``value`` takes as form-encoded query parameters under ``prefix``."""
    if isinstance(value, Mapping):
        return sum(_encoded_size(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in value.items())
    if isinstance(value, list):
        return sum(_encoded_size(v, f"{prefix}.member.{n}") for n, v in enumerate(value, 1))
    text = value.isoformat() if isinstance(value, dt.datetime) else str(value)
    return len(prefix) + len(quote(text, safe="")) + 2   # "=" and "&"
