"""DynamoDB timers: messages due later than any bus can hold them, in the store's table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .aws import classify, error_code, make_client
from .dynamodb_tables import TIMER_INDEX, create_tables, paginate, table_of


class DynamoTimers:
    """An :class:`fsm.ports.TimerStore`: one item per timer, found by the sparse GSI
    ``timers-by-due`` (partition ``timer_shard``, sort ``due``).

    ``due`` queries each shard for ``due <= now`` in order, so it reads only due timers and
    never scans the table. ``shards`` (default 1) spreads a high timer write rate over
    several index partitions at the cost of one query per shard per poll. The index is
    eventually consistent: a timer added a moment ago may show up one poll later.
    """

    def __init__(self, url: str, *, client: Any = None, endpoint_url: str | None = None,
                 aws: Mapping[str, Any] | None = None, prefix: str = "", shards: int = 1):
        self.url = url
        self.table, region = table_of(url)
        self.prefix = prefix
        self.shards = max(1, shards)
        self._owns_client = client is None
        self.client = make_client("dynamodb", region, endpoint_url, aws, client)

    def create(self) -> None:
        create_tables(self.url, client=self.client)

    def add(self, timer_id: str, due: float, body: str) -> None:
        shard = sum(timer_id.encode()) % self.shards
        item = {**self._key(timer_id), "timer_id": {"S": timer_id}, "body": {"S": body},
                "timer_shard": {"S": f"{self.prefix}timers#{shard}"}, "due": {"N": repr(float(due))}}
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":   # already there: idempotent
                raise classify(exc, self.url) from exc
        except BotoCoreError as exc:
            raise classify(exc, self.url) from exc

    def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        found: list[tuple[float, str, str]] = []
        for shard in range(self.shards):
            query = {
                "TableName": self.table, "IndexName": TIMER_INDEX, "Limit": limit,
                "KeyConditionExpression": "timer_shard = :shard AND #due <= :now",
                "ExpressionAttributeNames": {"#due": "due"},
                "ExpressionAttributeValues": {":shard": {"S": f"{self.prefix}timers#{shard}"},
                                              ":now": {"N": repr(float(now))}},
            }
            for item in paginate(self.client, "query", query, self.url, limit=limit):
                found.append((float(item["due"]["N"]), item["timer_id"]["S"], item["body"]["S"]))
        return [(timer_id, body) for _, timer_id, body in sorted(found)[:limit]]

    def remove(self, timer_id: str) -> None:
        try:
            self.client.delete_item(TableName=self.table, Key=self._key(timer_id))
        except (BotoCoreError, ClientError) as exc:
            raise classify(exc, self.url) from exc

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def _key(self, timer_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"{self.prefix}timer#{timer_id}"}, "sk": {"S": "timer"}}
