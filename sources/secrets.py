"""Secrets Manager: the HTTP API's bearer token (``api: {token_secret: ARN}``).

Read once per container and kept for a few minutes: every request checks the token, and a
Secrets Manager call per request would cost more than the request. Kept no longer than
that, so a rotated secret takes effect without a redeploy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from fsm.errors import BackendError, MissingDependency

CACHE_SECONDS = 300.0


class SecretCache:
    """``SecretString`` by ARN, each read at most once per ``ttl`` seconds. A given
    ``client`` (a boto3 Secrets Manager client, or moto's) is used for every ARN."""

    def __init__(self, client: Any = None, *, ttl: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.ttl = ttl
        self.clock = clock
        self._values: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def secret_string(self, arn: str, *, endpoint_url: str | None = None,
                      aws: Mapping[str, Any] | None = None) -> str:
        """The secret's text, surrounding whitespace removed (a token saved from a file
        often ends in a newline)."""
        now = self.clock()
        with self._lock:
            cached = self._values.get(arn)
        if cached is not None and now < cached[1]:
            return cached[0]
        value = self._read(arn, endpoint_url, aws)
        with self._lock:
            self._values[arn] = (value, now + self.ttl)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def _read(self, arn: str, endpoint_url: str | None, aws: Mapping[str, Any] | None) -> str:
        try:
            from .aws import classify, make_client, parse_arn
        except ImportError as exc:
            raise MissingDependency("api.token_secret needs the 'boto3' package: "
                                    "pip install 'lambda-fsm[aws]'") from exc
        region = parse_arn(arn)[1]
        client = make_client("secretsmanager", region, endpoint_url, aws, client=self.client)
        try:
            reply = client.get_secret_value(SecretId=arn)
        except Exception as exc:  # sorted by classify: recoverable or not
            raise classify(exc, arn) from exc
        value = (reply.get("SecretString") or "").strip()
        if not value:
            raise BackendError(f"{arn}: the secret has no SecretString (a binary or empty secret cannot be "
                               "a bearer token)")
        return value


_shared = SecretCache()


def shared_cache() -> SecretCache:
    """The container's cache, which the Lambda handler's HTTP branch reads through."""
    return _shared
