"""What every AWS adapter shares: building a client, reading an ARN, sorting errors.

Adapters never build boto3 clients themselves: one place decides timeouts and retries, so
a failover can happen within a Lambda's time budget instead of after botocore's default
60 s read timeout and legacy retries. ``classify`` is the single answer to "is this fault
worth trying on the secondary?", which the failover router reads from the error *type*.

Cold starts pay only for what is used. Importing this module imports no boto3 or
botocore; :func:`make_client` hands out a :class:`LazyClient`, which builds its boto3
client on the first call through it, from one process-wide session (a second client
then reuses the endpoint and model data the first one loaded). So an adapter opened at
load costs nothing until it makes a call, and a configuration that never calls a
service never imports the SDK for it. What the first call does pay is kept small: the
session's model loader finds a service without listing all of botocore's (and reads its
JSON into plain dicts), and botocore's import and each client's build run with the
cyclic garbage collector paused (see :func:`_loader_class`, :func:`_collector_paused`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fsm.errors import BackendError, RecoverableError

# Short by default: a Lambda would rather fail over than wait out botocore's 60 s.
DEFAULT_AWS: dict[str, Any] = {"connect_timeout": 2.0, "read_timeout": 5.0, "max_attempts": 3}

# Error codes that mean "the request was fine, the service could not take it now".
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "LimitExceededException", "SlowDown",
    "TransactionInProgressException", "TransactionConflictException", "KMSThrottlingException",
    "BandwidthLimitExceeded", "RequestTimeout", "RequestTimeoutException",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure",
    "InternalServerError", "InternalError",
})
# A missing table/queue/topic: the secondary (or a later attempt, after a deploy) may have it.
MISSING_RESOURCE_CODES = frozenset({
    "ResourceNotFoundException", "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue", "NotFound", "NotFoundException",
})


def network_errors() -> tuple[type[Exception], ...]:
    """What botocore raises when the network failed before or during the exchange."""
    import botocore.exceptions as bx

    return (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
            bx.ConnectionClosedError, bx.ConnectionError, bx.HTTPClientError)


def aws_config(aws: Mapping[str, Any] | None = None) -> Any:
    """The botocore Config for ``aws`` (connect_timeout, read_timeout, max_attempts).

    ``max_attempts`` counts every call, the first included (botocore's own
    ``max_attempts`` counts only the retries, so it is passed as ``total_max_attempts``):
    ``max_attempts=1`` means no retry, which is what a failover test wants.
    """
    from botocore.config import Config

    settings = {**DEFAULT_AWS, **(aws or {})}
    return Config(
        connect_timeout=float(settings["connect_timeout"]),
        read_timeout=float(settings["read_timeout"]),
        retries={"total_max_attempts": int(settings["max_attempts"]), "mode": "standard"},
    )


def make_client(service: str, region: str | None = None, endpoint_url: str | None = None,
                aws: Mapping[str, Any] | None = None, client: Any = None) -> Any:
    """The injected ``client`` if given, else a :class:`LazyClient` for ``service``.

    ``endpoint_url=None`` lets boto3 apply ``AWS_ENDPOINT_URL`` (moto_server, LocalStack)
    as it stands when the client is built, on its first call.
    """
    if client is not None:
        return client
    return LazyClient(service, region or None, endpoint_url, dict(aws) if aws else None)


class LazyClient:
    """A boto3 client built on first use. Every attribute but ``service``, ``built``,
    ``real`` and ``close`` is the real client's, so callers cannot tell it from one
    (``client.meta``, paginators and ``client.exceptions`` build it too)."""

    def __init__(self, service: str, region: str | None, endpoint_url: str | None,
                 aws: Mapping[str, Any] | None):
        self.service = service
        self._options = (region, endpoint_url, aws)
        self._client: Any = None

    @property
    def built(self) -> bool:
        return self._client is not None

    def real(self) -> Any:
        """The boto3 client, built now if this is its first use."""
        if self._client is None:
            with _lock:
                if self._client is None:
                    self._client = _build(self.service, *self._options)
        return self._client

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("service", "_options", "_client"):
            raise AttributeError(name)   # copy/pickle probes, and a half-made instance
        return getattr(self.real(), name)

    def close(self) -> None:
        """Close the client if it was ever built (closing must not build one)."""
        if self._client is not None:
            self._client.close()

    def __repr__(self) -> str:
        return f"LazyClient({self.service!r}, built={self.built})"


# One session for the process: boto3's default session is made lazily and without a lock,
# so every client is made from this one under ``_lock`` instead (botocore clients are safe
# to share between threads; making them from one session at once is not).
_lock = threading.RLock()
_session: Any = None
_session_handlers = -1
_watchers: list[Callable[[str, Any], None]] = []
clients_built: Counter[str] = Counter()   # service -> boto3 clients built in this process


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the block runs (under ``_lock``), if it was on.

    Importing botocore and building a client allocate tens of thousands of objects that
    live as long as the process (modules, the service model, the client's class) and
    almost no garbage, so the collector, run a hundred times meanwhile, frees next to
    nothing; it then walks them all again in its older generations. Paused, the new
    objects are examined once, at the first collection after the block.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def shared_session() -> Any:
    """The process's botocore session.

    A session copies botocore's built-in event handlers when it is made; a library that
    adds one later (moto's in-process mock does, when imported) gets a new session, so
    clients built afterwards see it.
    """
    global _session, _session_handlers
    with _lock, _collector_paused():
        import botocore.session
        from botocore.handlers import BUILTIN_HANDLERS

        if _session is None or _session_handlers != len(BUILTIN_HANDLERS):
            # botocore's own session: boto3's adds nothing a client needs, and importing
            # boto3 (s3transfer with it) costs a cold start some 100 ms.
            session = botocore.session.Session()
            session.lazy_register_component("data_loader", lambda: _model_loader(session))
            _session, _session_handlers = session, len(BUILTIN_HANDLERS)
        return _session


# The models a client is built from, read once per process and kept across sessions.
_loaders: dict[Any, Any] = {}


def _model_loader(session: Any) -> Any:
    """The session's ``data_loader``: botocore's own :class:`~botocore.loaders.Loader`
    (same search path, ``AWS_DATA_PATH`` included), made cheaper in two ways that change
    nothing it answers. See :func:`_loader_class`."""
    data_path = session.get_config_variable("data_path")
    with _lock:
        if data_path not in _loaders:
            cls = _loader_class()
            if data_path is None:
                _loaders[data_path] = cls()
            else:
                paths = [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)]
                _loaders[data_path] = cls(extra_search_paths=paths)
        return _loaders[data_path]


_LOADER_CLASS: Any = None


def _loader_class() -> Any:
    """botocore's Loader, but for what a cold start pays building its first client:

    * a service's model is looked for in that service's folders. botocore's
      ``load_service_model`` first lists *every* known service (a directory walk over some
      420 services, for each model type: ``service-2`` and ``endpoint-rule-set-1``, some
      2,600 stat calls) only to check that the name is among them. Whether a service is
      known is whether one of its API versions has the model, which is what
      ``list_api_versions`` finds by reading the one folder; a name it does not find goes
      to botocore's own check, which raises ``UnknownServiceError`` as before;
    * JSON models are read into plain dicts rather than an ``OrderedDict`` per object
      (insertion-ordered either way): botocore's ``object_pairs_hook`` makes the decoder
      call back for every object, which triples the time of ``endpoints.json`` (1.2 MB,
      read for every first client).
    """
    global _LOADER_CLASS
    if _LOADER_CLASS is not None:
        return _LOADER_CLASS
    import gzip
    import json

    from botocore.exceptions import DataNotFoundError
    from botocore.loaders import JSONFileLoader, Loader, instance_cache

    openers: tuple[tuple[str, Callable[..., Any]], ...] = ((".json", open), (".json.gz", gzip.open))

    class ModelFiles(JSONFileLoader):
        def load_file(self, file_path: str) -> Any:
            for ext, opener in openers:      # botocore's order: the plain file first
                full_path = file_path + ext
                if os.path.isfile(full_path):
                    with opener(full_path, "rb") as fp:
                        return json.loads(fp.read().decode("utf-8"))
            return None

    class ModelLoader(Loader):
        FILE_LOADER_CLASS = ModelFiles

        @instance_cache
        def load_service_model(self, service_name: str, type_name: str, api_version: str | None = None) -> Any:
            try:
                if service_name in ("", ".", "..") or os.path.basename(service_name) != service_name:
                    raise DataNotFoundError(data_path=service_name)     # a folder's name or nothing
                latest = self.determine_latest_version(service_name, type_name)
            except DataNotFoundError:
                # not a service with this model: botocore's own check says so (naming the known ones)
                return Loader.load_service_model(self, service_name, type_name, api_version)
            version = latest if api_version is None else api_version
            model = self.load_data(os.path.join(service_name, version, type_name))
            self._extras_processor.process(model, self._find_extras(service_name, type_name, version))
            return model

    # Only where botocore's Loader still has the parts the override relies on; else its own.
    probe = Loader()
    has_parts = all(hasattr(probe, name) for name in ("_find_extras", "_extras_processor",
                                                      "determine_latest_version", "load_data"))
    _LOADER_CLASS = ModelLoader if has_parts else Loader
    return _LOADER_CLASS


def _build(service: str, region: str | None, endpoint_url: str | None, aws: Mapping[str, Any] | None) -> Any:
    with _lock, _collector_paused():
        client = shared_session().create_client(service, region_name=region, endpoint_url=endpoint_url,
                                                config=aws_config(aws))
        clients_built[service] += 1
        watchers = list(_watchers)
    for watch in watchers:
        watch(service, client)
    return client


@contextlib.contextmanager
def watching_clients(watch: Callable[[str, Any], None]) -> Iterator[None]:
    """Call ``watch(service, client)`` for every boto3 client built while the block runs,
    before its first call (``fsm cost`` registers its counting hooks on it this way)."""
    with _lock:
        _watchers.append(watch)
    try:
        yield
    finally:
        with _lock:
            _watchers.remove(watch)


def parse_arn(arn: str) -> tuple[str, str, str, str]:
    """``arn:aws:dynamodb:eu-west-1:123:table/T`` -> ``("dynamodb", "eu-west-1", "123", "table/T")``."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[2] or not parts[5]:
        raise BackendError(f"{arn!r} is not an ARN; expected arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE")
    return parts[2], parts[3], parts[4], parts[5]


def _botocore_errors() -> Any:
    """``botocore.exceptions`` if anything imported it, else None: an error cannot be
    botocore's when botocore was never loaded, and sorting it must not load it."""
    return sys.modules.get("botocore.exceptions")


def error_code(exc: BaseException) -> str:
    bx = _botocore_errors()
    if bx is not None and isinstance(exc, bx.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_recoverable(exc: BaseException) -> bool:
    bx = _botocore_errors()
    if bx is None:
        return False
    if isinstance(exc, network_errors()):
        return True
    if isinstance(exc, bx.ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code in THROTTLING_CODES or code in MISSING_RESOURCE_CODES or status >= 500 or status == 429
    return False


def classify(exc: BaseException, where: str = "") -> BackendError:
    """Turn a botocore error into ``RecoverableError`` or ``BackendError``.

    ``where`` (an ARN or URL) goes first in the message, so a log line names the resource.
    Callers raise the result ``from exc`` to keep the original traceback.
    """
    if isinstance(exc, BackendError):
        return exc
    kind = RecoverableError if is_recoverable(exc) else BackendError
    prefix = f"{where}: " if where else ""
    return kind(f"{prefix}{type(exc).__name__}: {exc}")
