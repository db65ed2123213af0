"""Stream positions: where an instance last consumed (for ``fsm resume``) and where a
worker's shard reader stands. A DynamoDB table (``settings checkpoint:``), one item per
key (``pk`` = PREFIX + ``ckpt#`` + key, ``sk`` = ``checkpoint``, ``value`` = JSON text), so
the table can be the instance store's own table.

When it is, :class:`sources.dynamodb.DynamoStore` writes an instance's item itself, in
the transaction of the commit that consumed the record (``writes_checkpoints``): give
both the same ``prefix`` so that this class reads what the store wrote.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .aws import classify, make_client
from .dynamodb_tables import checkpoint_key, table_of


class DynamoCheckpoints:
    def __init__(self, url: str, *, client: Any = None, endpoint_url: str | None = None,
                 aws: Mapping[str, Any] | None = None, prefix: str = ""):
        self.url = url
        self.prefix = prefix
        self.table, region = table_of(url)
        self.client = make_client("dynamodb", region, endpoint_url, aws, client)

    def _key(self, key: str) -> dict[str, Any]:
        return checkpoint_key(self.prefix, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            item = self.client.get_item(TableName=self.table, Key=self._key(key), ConsistentRead=True).get("Item")
        except Exception as exc:
            raise classify(exc, self.url) from exc
        return json.loads(item["value"]["S"]) if item else default

    def __setitem__(self, key: str, value: Any) -> None:
        try:
            self.client.put_item(TableName=self.table,
                                 Item={**self._key(key), "value": {"S": json.dumps(value)}})
        except Exception as exc:
            raise classify(exc, self.url) from exc
