"""What each AWS call ``fsm cost`` sees is billed, worked out from its request and answer.

:class:`Meter` registers two botocore hooks on every client the adapters build
(``before-parameter-build`` keeps the request, ``after-call`` bills it), and adds up the
billed quantities by price line; :mod:`fsm.app.cost` runs the sample and prices them.

How quantities are counted:

- DynamoDB on-demand: a write costs ceil(size / 1 KB) write units, size being the larger
  of the item before and after (read back from moto around the call; a failed
  conditional write costs the item as it is); each item of a transaction costs twice
  that. Index writes are counted apart: an index entry put, updated or removed costs
  ceil(entry size / 1 KB), two when its key changes (not doubled in transactions). Reads
  cost ceil(size / 4 KB) read units, half for an eventually consistent read (the
  default of Query and GetItem), at least one half per request.
- SQS, SNS, EventBridge: one request or event per 64 KB chunk of payload; Kinesis: one
  PUT payload unit per 25 KB of each record; S3 by request class; CloudWatch per
  PutMetricData request; EMF lines (the default metrics in Lambda) as log bytes ingested.
- The Lambda event source mapping's calls are billed where AWS bills them: SQS receives
  and deletes are SQS requests; Kinesis and DynamoDB stream reads by Lambda are free.
- Lambda (counted by :mod:`fsm.app.cost`): one request per batch (SNS and EventBridge
  invoke once per message); duration is the framework's own time in each invocation,
  measured (moto's answering and the meter's reads left out), plus each AWS call at an
  assumed in-region latency (``LATENCY_MS``), rounded up to the millisecond.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KB = 1024
CHUNK_64K, KINESIS_UNIT = 64 * KB, 25 * KB
ONE_TIME = {("sqs", "GetQueueUrl")}       # once per container and queue, then cached
FREE = {"dynamodbstreams": "*", "ecs": "*",
        "dynamodb": {"DescribeTable", "ListTables", "DescribeTimeToLive"},
        "kinesis": {"GetRecords", "GetShardIterator", "ListShards", "DescribeStreamSummary", "DescribeStream"}}
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}
# Lambda's duration counts each AWS call at this latency (ms), in-region, instead of the
# time in-process moto takes to answer it.
LATENCY_MS = {"dynamodb": 5.0, "sqs": 8.0, "sns": 15.0, "kinesis": 10.0, "events": 15.0, "s3": 15.0,
              "cloudwatch": 10.0, "*": 10.0}


def item_size(item: Mapping[str, Any] | None) -> int:
    """What DynamoDB bills a write by, as the store counts it. Imported when first
    needed: every ``fsm`` command registers ``fsm cost``, and the DynamoDB modules bring
    botocore, which a configuration without AWS does not have."""
    from sources.dynamodb_items import item_size as size

    return size(item)


def units(size: int, unit: int) -> int:
    return max(1, math.ceil(size / unit))


@dataclass
class Index:
    keys: tuple[str, ...]
    projected: tuple[str, ...] | None     # None: ALL


class DynamoLedger:
    """Items before and after each write, read with a client of its own (not counted)."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._tables: dict[tuple[str, str], tuple[tuple[str, ...], list[Index]]] = {}

    def client(self, region: str) -> Any:
        if region not in self._clients:
            import boto3.session

            self._clients[region] = boto3.session.Session().client("dynamodb", region_name=region)
        return self._clients[region]

    def schema(self, region: str, table: str) -> tuple[tuple[str, ...], list[Index]]:
        if (region, table) not in self._tables:
            described = self.client(region).describe_table(TableName=table)["Table"]
            keys = tuple(k["AttributeName"] for k in described["KeySchema"])
            indexes = []
            for gsi in described.get("GlobalSecondaryIndexes", []) + described.get("LocalSecondaryIndexes", []):
                own = tuple(k["AttributeName"] for k in gsi["KeySchema"])
                projection = gsi.get("Projection", {})
                kind = projection.get("ProjectionType", "ALL")
                projected = None if kind == "ALL" else keys + own + tuple(projection.get("NonKeyAttributes", ()))
                indexes.append(Index(own, projected))
            self._tables[(region, table)] = (keys, indexes)
        return self._tables[(region, table)]

    def targets(self, region: str, operation: str, params: Mapping[str, Any]) -> list[tuple[str, str, dict, Any]]:
        """(kind, table, key, request body) of every item a write touches."""
        if operation == "TransactWriteItems":
            found = []
            for entry in params.get("TransactItems", []):
                (kind, body), = entry.items()
                found.append((kind, body["TableName"], self._key(region, body["TableName"], body), body))
            return found
        if operation == "BatchWriteItem":
            found = []
            for table, requests in params.get("RequestItems", {}).items():
                for request in requests:
                    kind, body = ("Put", request["PutRequest"]) if "PutRequest" in request \
                        else ("Delete", request["DeleteRequest"])
                    found.append((kind, table, self._key(region, table, body), body))
            return found
        kind = operation.removesuffix("Item")
        return [(kind, params["TableName"], self._key(region, params["TableName"], params), params)]

    def _key(self, region: str, table: str, body: Mapping[str, Any]) -> dict:
        if "Key" in body:
            return dict(body["Key"])
        keys, _ = self.schema(region, table)
        return {k: body["Item"][k] for k in keys}

    def read(self, region: str, table: str, key: dict) -> dict | None:
        return self.client(region).get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")

    def index_writes(self, region: str, table: str, old: dict | None, new: dict | None) -> int:
        spent = 0
        _, indexes = self.schema(region, table)
        for index in indexes:
            before, after = _entry(old, index), _entry(new, index)
            if before is None and after is None:
                continue
            if before is None or after is None:
                spent += units(item_size(before or after), KB)
            elif any(old[k] != new[k] for k in index.keys):
                spent += units(item_size(before), KB) + units(item_size(after), KB)
            elif before != after:
                spent += units(item_size(after), KB)
        return spent


def _entry(item: dict | None, index: Index) -> dict | None:
    if item is None or any(k not in item for k in index.keys):
        return None
    return dict(item) if index.projected is None else {k: item[k] for k in index.projected if k in item}


class Meter:
    """Billed quantities of every call the adapters' clients make while it is watching.

    ``phase`` says who is calling: ``lambda`` (the handler, and the client starting
    instances), or ``poll`` (what Lambda's event source mapping would do)."""

    def __init__(self) -> None:
        self.phase = "lambda"
        self.active = True
        self.calls: Counter[str] = Counter()
        self.one_time: Counter[str] = Counter()
        self.quantities: Counter[str] = Counter()
        self.own_seconds = 0.0             # time the meter spent reading items
        self.call_seconds = 0.0            # time spent in calls (moto answering)
        self.assumed_seconds = 0.0         # what those calls would take on AWS (LATENCY_MS)
        self.ledger = DynamoLedger()
        self.errors: list[str] = []        # calls the meter could not bill: the figures would be wrong

    def watch(self, service: str, client: Any) -> None:
        region = client.meta.region_name
        client.meta.events.register("before-parameter-build.*.*",
                                    lambda **kw: self._guarded(self._before, service, region, **kw))
        client.meta.events.register("after-call.*.*", lambda **kw: self._guarded(self._after, service, region, **kw))

    def _guarded(self, hook: Any, service: str, region: str, **kw: Any) -> None:
        """A fault in the meter must not fail the call it watches (the sample would then
        show a failure of the machine's); it is kept and reported instead."""
        try:
            hook(service, region, **kw)
        except Exception as exc:  # noqa: BLE001 - reported by fsm cost after the sample
            model = kw.get("model")
            self.errors.append(f"{service}.{getattr(model, 'name', '?')}: {type(exc).__name__}: {exc}")

    def _before(self, service: str, region: str, params: Any = None, model: Any = None, context: Any = None,
                **_: Any) -> None:
        if context is None or model is None or not self.active:
            return
        context["cost_params"] = dict(params or {})
        if service == "dynamodb" and model.name in DYNAMODB_WRITES:
            begun = time.perf_counter()
            context["cost_before"] = [(kind, table, key, body, self.ledger.read(region, table, key))
                                      for kind, table, key, body in self.ledger.targets(region, model.name, params)]
            self.own_seconds += time.perf_counter() - begun
        context["cost_started"] = time.perf_counter()

    def _after(self, service: str, region: str, model: Any = None, parsed: Any = None, context: Any = None,
               **_: Any) -> None:
        if model is None or context is None or "cost_params" not in context:
            return
        operation, params = model.name, context.get("cost_params", {})
        self.call_seconds += time.perf_counter() - context.get("cost_started", time.perf_counter())
        self.assumed_seconds += LATENCY_MS.get(service, LATENCY_MS["*"]) / 1000
        label = f"{service}.{operation}" + (" (event source)" if self.phase == "poll" else "")
        if (service, operation) in ONE_TIME:
            self.one_time[label] += 1
            return
        self.calls[label] += 1
        begun = time.perf_counter()
        try:
            self._bill(service, region, operation, params, parsed or {}, context)
        finally:
            self.own_seconds += time.perf_counter() - begun

    def _bill(self, service: str, region: str, operation: str, params: Mapping[str, Any],
              parsed: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        add = self.quantities.update
        free = FREE.get(service)
        if free == "*" or (free and operation in free):
            add({f"free:{service}": 1})
        elif service == "dynamodb":
            self._dynamodb(region, operation, params, parsed, context)
        elif service == "sqs":
            fifo = str(params.get("QueueUrl", "")).endswith(".fifo")
            kind = ("sqs_fifo" if fifo else "sqs") + (":poll" if self.phase == "poll" else "")
            add({kind: _chunks(_sqs_payload(operation, params, parsed), CHUNK_64K)})
        elif service == "sns":
            entries = params.get("PublishBatchRequestEntries") or [params]
            add({"sns": _chunks(sum(len(str(e.get("Message", "")).encode()) for e in entries), CHUNK_64K)})
        elif service == "kinesis":
            records = params.get("Records") or [params]
            add({"kinesis": sum(units(len(r.get("Data", b"")) + len(r.get("PartitionKey", "").encode()),
                                      KINESIS_UNIT) for r in records)})
        elif service == "events":
            add({"events": sum(units(sum(len(str(e.get(k, "")).encode()) for k in ("Source", "DetailType", "Detail")),
                                     CHUNK_64K) for e in params.get("Entries", [])) or 1})
        elif service == "s3":
            put = operation.startswith(("Put", "Copy", "Post", "List", "CreateMultipart", "UploadPart",
                                        "CompleteMultipart"))
            if not operation.startswith("Delete"):
                add({"s3_put" if put else "s3_get": 1})
        elif service == "cloudwatch":
            add({"cloudwatch": 1})
        elif service == "secretsmanager":
            add({"secretsmanager": 1})
        else:
            add({f"unpriced:{service}.{operation}": 1})

    def _dynamodb(self, region: str, operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any],
                  context: Mapping[str, Any]) -> None:
        if operation in DYNAMODB_WRITES:
            factor = 2 if operation == "TransactWriteItems" else 1
            failed = "Error" in parsed
            for kind, table, key, body, old in context.get("cost_before", []):
                new = old if failed else self._after_image(region, kind, table, key, body, parsed)
                self.quantities["ddb_write"] += factor * units(max(item_size(old), item_size(new)), KB)
                self.quantities["ddb_index_write"] += self.ledger.index_writes(region, table, old, new)
            return
        consistent = 1.0 if params.get("ConsistentRead") else 0.5
        if operation == "GetItem":
            self.quantities["ddb_read"] += consistent * units(item_size(parsed.get("Item")), 4 * KB)
        elif operation in ("Query", "Scan"):
            size = sum(item_size(item) for item in parsed.get("Items", []))
            self.quantities["ddb_read"] += consistent * units(size, 4 * KB)
        elif operation == "BatchGetItem":
            for table, items in parsed.get("Responses", {}).items():
                factor = 1.0 if params.get("RequestItems", {}).get(table, {}).get("ConsistentRead") else 0.5
                self.quantities["ddb_read"] += sum(factor * units(item_size(i), 4 * KB) for i in items)
        elif operation == "TransactGetItems":
            self.quantities["ddb_read"] += sum(2 * units(item_size(r.get("Item")), 4 * KB)
                                               for r in parsed.get("Responses", []))
        else:
            self.quantities[f"unpriced:dynamodb.{operation}"] += 1


    def _after_image(self, region: str, kind: str, table: str, key: dict, body: Mapping[str, Any],
                     parsed: Mapping[str, Any]) -> dict | None:
        """The item after a successful write: from the request or the answer when they
        hold it, else read back."""
        if kind == "Put":
            return dict(body["Item"])
        if kind == "Delete":
            return None
        if kind == "Update" and body.get("ReturnValues") == "ALL_NEW" and "Attributes" in parsed:
            return dict(parsed["Attributes"])
        return self.ledger.read(region, table, key)


def _chunks(size: int, chunk: int) -> int:
    return units(size, chunk)


def _sqs_payload(operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> int:
    if operation == "SendMessage":
        return len(str(params.get("MessageBody", "")).encode())
    if operation == "SendMessageBatch":
        return sum(len(str(e.get("MessageBody", "")).encode()) for e in params.get("Entries", []))
    if operation == "ReceiveMessage":
        return sum(len(str(m.get("Body", "")).encode()) for m in parsed.get("Messages", []))
    return 0


class CountingStream:
    """Where EMF lines go in the sample: counted, not printed."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)

    def flush(self) -> None:
        pass
