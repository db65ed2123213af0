"""Amazon S3 as the payload store of the claim check (settings ``offload:``): a context,
or event data, above the threshold is kept as one object per committed step, and records
and messages carry a small reference to it.

``s3://BUCKET/PREFIX``: objects are ``PREFIX/<instance>/<step>-<kind>-<digest>.json``.
Expire them with the bucket's lifecycle rule on the prefix (``fsm create-resources`` sets
one from ``history_retention_days``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsm.errors import BackendError

from .aws import classify, make_client


class S3Payloads:
    def __init__(self, url: str, *, client: Any = None, endpoint_url: str | None = None,
                 aws: Mapping[str, Any] | None = None):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise BackendError(f"{url!r}: an offload store is s3://BUCKET/PREFIX")
        self.url, self.bucket, self.prefix = url, bucket, prefix.strip("/")
        self.client = make_client("s3", endpoint_url=endpoint_url, aws=aws, client=client)

    def put(self, key: str, body: bytes) -> str:
        name = f"{self.prefix}/{key}" if self.prefix else key
        try:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=body, ContentType="application/json")
        except Exception as exc:
            raise classify(exc, self.url) from exc
        return f"s3://{self.bucket}/{name}"

    def get(self, url: str) -> bytes:
        bucket, _, name = url[len("s3://"):].partition("/")
        try:
            return self.client.get_object(Bucket=bucket, Key=name)["Body"].read()
        except Exception as exc:
            raise classify(exc, url) from exc

    def create(self, retention_days: float = 0.0) -> None:
        """The bucket, and a lifecycle rule expiring the prefix with the records' retention."""
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except Exception as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                raise classify(exc, self.url) from exc
        if retention_days:
            rule = {"ID": "lambda-fsm-offload", "Status": "Enabled",
                    "Filter": {"Prefix": f"{self.prefix}/" if self.prefix else ""},
                    "Expiration": {"Days": max(1, int(retention_days + 0.999))}}
            self.client.put_bucket_lifecycle_configuration(Bucket=self.bucket,
                                                           LifecycleConfiguration={"Rules": [rule]})

    def close(self) -> None:
        self.client.close()
