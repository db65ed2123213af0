"""The DynamoDB table that stores, timers and checkpoints share: its keys, indexes and TTL
(``create_tables``, what ``fsm create-resources`` makes), and the helpers every DynamoDB
adapter uses to name and page through it. See :mod:`sources.dynamodb` for the items.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fsm import codec
from fsm.errors import BackendError
from fsm.logs import log

from .aws import classify, error_code, make_client, parse_arn
from .listing import time_key

TTL = "ttl"
PENDING = "pending"
TIMER_INDEX = "timers-by-due"
# The pending index (see sources.dynamodb): KEYS_ONLY, keyed by the shard and the time the
# record started owing (OWED_AT, set when it starts and removed when it settles, so a
# running chain of commits leaves it alone); the sweep reads the candidates' records.
OWED_INDEX = "owed-since"
OWED_SHARD, OWED_AT = "owed_shard", "owed_at"
# The previous pending index (projection ALL, sorted by ``pending`` itself, so every
# running commit moved the whole item in it): no longer written; a table that has it is
# still read by the sweep until its last entry is gone (a commit takes its record out).
PENDING_INDEX = "pending-by-time"
PENDING_SHARD = "pending_shard"
CHECKPOINT_PREFIX = "ckpt#"
CHECKPOINT_SK = "checkpoint"

# Listing (see sources.dynamodb): two sparse, KEYS_ONLY indexes sharing the sort key
# LIST_AT ("TIME|ID", TIME that of the last change of status), one per filter shape
# (status; machine and status); the partition names the shape's values. Both move only
# when the status (or the machine) changes. The by-state listing reads the by-machine
# index and filters the records on their state.
LIST_AT = "list_at"
LIST_BY_STATUS, LIST_BY_MACHINE = "list_s", "list_m"
LIST_INDEXES = {LIST_BY_STATUS: "instances-by-status", LIST_BY_MACHINE: "instances-by-machine"}
# The previous by-state index: no longer written (its key changed at every commit); a
# record's entry goes when its status next changes.
LIST_BY_STATE, STATE_INDEX = "list_x", "instances-by-state"
LIST_FILLED = {"pk": {"S": "meta#"}, "sk": {"S": "list-attributes-filled"}}


def table_of(url: str) -> tuple[str, str]:
    """``(table name, region)`` from a table ARN."""
    service, region, _account, resource = parse_arn(url)
    kind, _, rest = resource.partition("/")
    if service != "dynamodb" or kind != "table" or not rest:
        raise BackendError(f"{url!r} is not a DynamoDB table ARN (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME)")
    return rest.split("/")[0], region


def checkpoint_key(prefix: str, key: str) -> dict[str, Any]:
    """The checkpoint item of ``key``: written by the store's commits and by
    :class:`sources.checkpoints.DynamoCheckpoints`, so both must agree on it."""
    return {"pk": {"S": f"{prefix}{CHECKPOINT_PREFIX}{key}"}, "sk": {"S": CHECKPOINT_SK}}


def paginate(client: Any, operation: str, request: dict[str, Any], url: str,
             limit: int | None = None) -> Iterable[dict[str, Any]]:
    """Items of a Query/Scan across pages (LastEvaluatedKey), stopping after ``limit``."""
    request, seen = dict(request), 0
    while True:
        try:
            page = getattr(client, operation)(**request)
        except (BotoCoreError, ClientError) as exc:
            raise classify(exc, url) from exc
        for item in page.get("Items", []):
            yield item
            seen += 1
            if limit is not None and seen >= limit:
                return
        if not page.get("LastEvaluatedKey"):
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def create_tables(*urls: str, client: Any = None, endpoint_url: str | None = None,
                  aws: Mapping[str, Any] | None = None, index_wait: float = 600.0) -> None:
    """Create each table (pk/sk, the timer, pending and listing indexes, on-demand
    billing) and enable TTL on ``ttl``.

    Safe to run twice: an existing table keeps its items, gains the indexes it lacks (a
    table made by an older version has no ``owed-since`` index; DynamoDB builds it from the
    existing items, which on a large table takes a while: this waits up to
    ``index_wait`` seconds for it, then leaves it building), and TTL is only switched on
    when it is off. One table can hold records, timers and checkpoints.
    """
    for url in dict.fromkeys(urls):
        table, region = table_of(url)
        dynamodb = make_client("dynamodb", region, endpoint_url, aws, client)
        try:
            _create_table(dynamodb, table)
            dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
            _add_missing_indexes(dynamodb, table, index_wait)
            _fill_list_attributes(dynamodb, table, url)
            status = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
            if status.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                dynamodb.update_time_to_live(TableName=table, TimeToLiveSpecification={
                    "Enabled": True, "AttributeName": TTL})
        except (BotoCoreError, ClientError) as exc:
            raise classify(exc, url) from exc


def list_partition(prefix: str, shard: int, *values: Any) -> str:
    """A listing index partition: the store's prefix, a shard, and the shape's values
    (status; or machine and status) as JSON, so no two value lists make the same text."""
    return f"{prefix}list#{shard}#{codec.dumps(list(values))}"


def list_sort_key(updated_at: Any, cid: str) -> str:
    return f"{time_key(updated_at)}|{cid}"


def list_partitions(prefix: str, shard: int, machine: Any, status: Any) -> dict[str, str | None]:
    """The listing partitions of a record with these values; ``None``: the attribute is
    removed, which leaves the record out of that index (no status, or no machine)."""
    listed = isinstance(status, str)
    by_machine = listed and isinstance(machine, str)
    return {LIST_BY_STATUS: list_partition(prefix, shard, status) if listed else None,
            LIST_BY_MACHINE: list_partition(prefix, shard, machine, status) if by_machine else None}


# index name -> (partition attribute, sort attribute); all sparse. Projection KEYS_ONLY
# (PROJECTIONS) but for the timers: an index entry is then written only when one of its
# keys changes (a moved key is a delete and a put), never because the record changed,
# and costs one write unit however large the record.
INDEXES = {TIMER_INDEX: ("timer_shard", "due"), OWED_INDEX: (OWED_SHARD, OWED_AT),
           **{name: (attribute, LIST_AT) for attribute, name in LIST_INDEXES.items()},
           # Kept, never written: a table made by an earlier version has them (and an
           # AWS::DynamoDB::Table can change one index per stack update); empty otherwise.
           PENDING_INDEX: (PENDING_SHARD, PENDING), STATE_INDEX: (LIST_BY_STATE, LIST_AT)}
LEGACY_INDEXES = frozenset({PENDING_INDEX, STATE_INDEX})
PROJECTIONS = {OWED_INDEX: "KEYS_ONLY", STATE_INDEX: "KEYS_ONLY", **{name: "KEYS_ONLY" for name in LIST_INDEXES.values()}}
ATTRIBUTE_TYPES = {"pk": "S", "sk": "S", "timer_shard": "S", "due": "N", OWED_SHARD: "S", OWED_AT: "N",
                   PENDING_SHARD: "S", PENDING: "N", LIST_AT: "S", LIST_BY_STATE: "S",
                   **dict.fromkeys(LIST_INDEXES, "S")}


def _index(name: str) -> dict[str, Any]:
    partition, sort = INDEXES[name]
    return {"IndexName": name, "Projection": {"ProjectionType": PROJECTIONS.get(name, "ALL")},
            "KeySchema": [{"AttributeName": partition, "KeyType": "HASH"},
                          {"AttributeName": sort, "KeyType": "RANGE"}]}


def _definitions(names: Iterable[str]) -> list[dict[str, str]]:
    return [{"AttributeName": n, "AttributeType": ATTRIBUTE_TYPES[n]} for n in names]


def _create_table(dynamodb: Any, table: str) -> None:
    # Every index, the legacy ones too (empty: nothing writes them), as the template makes it.
    try:
        dynamodb.create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=_definitions(dict.fromkeys(["pk", "sk", *(k for n in INDEXES for k in INDEXES[n])])),
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[_index(name) for name in INDEXES])
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise


def _add_missing_indexes(dynamodb: Any, table: str, wait: float) -> None:
    """Add the indexes a table made by an older version lacks (not the legacy ones, which
    nothing writes any more), one per UpdateTable (the most DynamoDB takes at a time),
    waiting for each to be ACTIVE before the next."""
    statuses = _index_statuses(dynamodb, table)
    for name, keys in INDEXES.items():
        if name in statuses or name in LEGACY_INDEXES:
            continue
        log(logging.INFO, "adding index", table=table, index=name)
        dynamodb.update_table(
            TableName=table, AttributeDefinitions=_definitions(("pk", "sk", *keys)),
            GlobalSecondaryIndexUpdates=[{"Create": _index(name)}])
        deadline = time.monotonic() + wait
        status = _index_statuses(dynamodb, table).get(name)
        while status != "ACTIVE" and time.monotonic() < deadline:
            time.sleep(2)
            status = _index_statuses(dynamodb, table).get(name)
        if status != "ACTIVE":
            log(logging.WARNING, "index still being built from the existing items; it serves "
                "queries once ACTIVE", table=table, index=name, status=status)
            return      # DynamoDB builds one index at a time: the next one waits for a later run


def index_names(dynamodb: Any, table: str) -> set[str]:
    """The names of the table's global secondary indexes (DescribeTable)."""
    return set(_index_statuses(dynamodb, table))


def _index_statuses(dynamodb: Any, table: str) -> dict[str, str]:
    """Index name -> IndexStatus of the table's global secondary indexes."""
    description = dynamodb.describe_table(TableName=table)["Table"]
    return {index["IndexName"]: str(index.get("IndexStatus") or "ACTIVE")
            for index in description.get("GlobalSecondaryIndexes") or []}


def _fill_list_attributes(dynamodb: Any, table: str, url: str) -> None:
    """Give the records of a table made before listing existed their listing attributes,
    so that every instance is listed, not only those written since. Once per table: a
    marker item says it is done, so later runs read one item instead of the table."""
    if dynamodb.get_item(TableName=table, Key=LIST_FILLED, ConsistentRead=True).get("Item"):
        return
    scan = {"TableName": table, "FilterExpression": "#sk = :record AND attribute_not_exists(#at)",
            "ExpressionAttributeNames": {"#sk": "sk", "#at": LIST_AT},
            "ExpressionAttributeValues": {":record": {"S": "record"}}}
    filled = 0
    for item in paginate(dynamodb, "scan", scan, url):
        filled += _fill_record(dynamodb, table, item)
    if filled:
        log(logging.INFO, "listing attributes added to existing records", table=table, records=filled)
    dynamodb.put_item(TableName=table, Item=LIST_FILLED)


def _fill_record(dynamodb: Any, table: str, item: Mapping[str, Any]) -> int:
    """One record's listing attributes (in shard 0: stores query every shard), unless it
    changed since it was read (then the store that changed it wrote them itself)."""
    cid, pk = item.get("id", {}).get("S"), item["pk"]["S"]
    if not cid or not pk.endswith(cid):
        return 0
    updated = item.get("updated_at", {})
    values = {LIST_AT: list_sort_key(float(updated["N"]) if "N" in updated else 0.0, cid),
              **list_partitions(pk[: len(pk) - len(cid)], 0, item.get("machine", {}).get("S"),
                                item.get("status", {}).get("S"))}
    sets = {name: value for name, value in values.items() if value is not None}
    names = {"#at": LIST_AT, "#u": "updated_at", **{f"#a{n}": name for n, name in enumerate(sets)}}
    attributes = {f":a{n}": {"S": value} for n, value in enumerate(sets.values())}
    unchanged = "attribute_not_exists(#u)"
    if updated:
        attributes[":u"], unchanged = updated, "#u = :u"
    try:
        dynamodb.update_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]},
                             UpdateExpression="SET " + ", ".join(f"#a{n} = :a{n}" for n in range(len(sets))),
                             ConditionExpression=f"attribute_not_exists(#at) AND {unchanged}",
                             ExpressionAttributeNames=names, ExpressionAttributeValues=attributes)
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        return 0
    return 1
