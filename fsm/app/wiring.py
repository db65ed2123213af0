"""Settings -> adapters -> a Dispatcher. The one place that opens backends by role, and
that refuses, at load, a configuration whose backends lack a capability it needs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.settings import Settings, load_settings

from ..dispatcher import Dispatcher, Routes
from ..errors import InvalidDefinition
from ..model import Machine
from ..payloads import Limits, Offload, Payloads
from ..ports import (
    CheckpointStore,
    EventBus,
    InstanceStore,
    Metrics,
    NullMetrics,
    TimerStore,
)

if TYPE_CHECKING:
    from config.loader import Definitions


@dataclass
class Wiring:
    settings: Settings
    stores: list[InstanceStore]
    routes: Routes
    metrics: Metrics
    dispatcher: Dispatcher
    embedded: bool                      # no stream configured: the in-process bus drives instances
    chaos: list[Any] = field(default_factory=list)
    volatile_timers: bool = False       # timers held in this process only (no durable timer store)

    def close(self) -> None:
        for store in self.stores:
            store.close()


def open_role(role: str, name: str, settings: Settings, chaos: list[Any] | None = None,
              metrics: Metrics | None = None, **extra: Any) -> Any:
    from sources.registry import open_adapter, scheme_of

    options: dict[str, Any] = dict(extra)
    if name.startswith("arn:"):
        options.update(endpoint_url=settings.endpoints.get(name), aws=settings.aws or None)
    adapter = open_adapter(role, name, **options)
    probability = settings.chaos.get(name) or settings.chaos.get(scheme_of(name) + "://")
    if probability:
        from sources.chaos import ChaosWrapper

        adapter = ChaosWrapper(adapter, float(probability), counters=metrics)
        if chaos is not None:
            chaos.append(adapter)
    return adapter


def open_bus(names: list[str], settings: Settings, metrics: Metrics, chaos: list[Any]) -> EventBus | None:
    if not names:
        return None
    buses = [open_role("bus", name, settings, chaos, metrics) for name in names]
    if len(buses) == 1:
        return buses[0]
    from sources.failover import FailoverBus

    return FailoverBus(buses, metrics=metrics)


def open_metrics(settings: Settings, *, target_named: bool = True,
                 environ: Mapping[str, str] | None = None) -> Metrics:
    """The metrics sink of ``settings``; ``target_named=False`` says no settings layer
    chose ``metrics.target``, so the place decides (:func:`metrics_target`)."""
    target = metrics_target(settings, target_named=target_named, environ=environ)
    namespace = settings.metrics.get("namespace", "lambda-fsm")
    if target == "cloudwatch":
        from sources.cloudwatch import CloudWatchMetrics

        return CloudWatchMetrics(namespace, aws=settings.aws or None)
    if target == "emf":
        from sources.emf import EmfMetrics

        return EmfMetrics(namespace)
    return NullMetrics()


def metrics_target(settings: Settings, *, target_named: bool = True,
                   environ: Mapping[str, str] | None = None) -> str:
    """``cloudwatch``, ``emf`` or ``none``. A target nobody chose (``auto``, or the
    default ``none`` that no layer named) is EMF inside Lambda, where stdout goes to
    CloudWatch Logs and the metrics cost no API call, and none elsewhere."""
    target = str(settings.metrics.get("target") or "auto")
    if target == "auto" or (target == "none" and not target_named):
        env = os.environ if environ is None else environ
        return "emf" if env.get("AWS_LAMBDA_FUNCTION_NAME") else "none"
    return target


def metrics_target_named(config_settings: Mapping[str, Any] | None, settings_file: str | None = None,
                         environ: Mapping[str, str] | None = None) -> bool:
    """Whether a settings layer (the config's ``settings:``, the settings file,
    ``FSM_METRICS``) names ``metrics.target``. The settings hold the default ``none``
    either way; only the layers tell "chose none" from "chose nothing"."""
    import json

    from config.settings import _file_layer

    env = os.environ if environ is None else environ

    def names_target(values: Any) -> bool:
        metrics = values.get("metrics") if isinstance(values, Mapping) else None
        return isinstance(metrics, Mapping) and "target" in metrics

    if names_target(config_settings):
        return True
    if env.get("FSM_METRICS"):
        try:
            if names_target({"metrics": json.loads(env["FSM_METRICS"])}):
                return True
        except ValueError:
            return True   # load_settings has refused it already; never guess past a bad value
    path = settings_file or env.get("FSM_SETTINGS")
    return bool(path) and any(names_target(values) for _, values in _file_layer(path))


def _store_timers(settings: Settings, stores: list[InstanceStore], chaos: list[Any],
                  metrics: Metrics, last_resort: list[Any]) -> TimerStore | None:
    """Timers in the stores' own backends (sqlite: the same file; redis; DynamoDB: the
    same table), failing over in the stores' order."""
    from sources.registry import has_adapter

    found: list[Any] = []
    for name, store in zip(settings.store, stores):
        if name.startswith("sqlite:"):
            found.append(store)
        elif has_adapter("timers", name) and not name.startswith("memory:"):
            found.append(open_role("timers", name, settings, chaos, metrics))
    if not found and last_resort:
        return last_resort[0]
    found += last_resort
    if len(found) > 1:
        from sources.failover import FailoverTimers

        return FailoverTimers(found)
    return found[0] if found else None


def build(machines: dict[str, Machine], settings: Settings, *, metrics: Metrics | None = None,
          bus: EventBus | None = None) -> Wiring:
    """Open every backend the settings name. ``bus`` overrides the stream (tests)."""
    from sources.memory import MemoryBus, MemoryTimers

    chaos: list[Any] = []
    metrics = metrics or open_metrics(settings)
    stores = [open_role("store", name, settings, chaos, metrics) for name in settings.store]
    stream = bus or open_bus(settings.stream, settings, metrics, chaos)
    embedded = stream is None
    timers: TimerStore | None = None
    retry_names = [n for n in settings.retry if not n.startswith("arn:aws:dynamodb:")]
    timer_names = [n for n in settings.retry if n.startswith("arn:aws:dynamodb:")]
    volatile = False
    if timer_names:
        timers = open_role("timers", timer_names[0], settings, chaos, metrics)
    else:
        # Embedded, an in-process timer store is the last resort: delays still work there.
        timers = _store_timers(settings, stores, chaos, metrics, [MemoryTimers()] if embedded else [])
        volatile = isinstance(timers, MemoryTimers) and any(not n.startswith("memory:") for n in settings.store)
    if embedded:
        stream = MemoryBus()
    routes = Routes(bus=stream, retry=open_bus(retry_names, settings, metrics, chaos), timers=timers,
                    dead_letter=open_bus(settings.dead_letter, settings, metrics, chaos),
                    notify=open_bus(settings.notify, settings, metrics, chaos))
    check_delays(machines, settings, routes, volatile)
    checkpoints: CheckpointStore | None = None
    if settings.checkpoint:
        from sources.dynamodb_checkpoints import DynamoCheckpoints

        name = settings.checkpoint[0]
        checkpoints = DynamoCheckpoints(name, endpoint_url=settings.endpoints.get(name), aws=settings.aws or None)
    from sources.registry import size_limit

    holder_alive = None
    if embedded:
        from .local import holder_alive
    dispatcher = Dispatcher(machines, stores, routes, metrics=metrics, lease_timeout=settings.lease_timeout,
                            max_local_hops=settings.max_local_hops, resend_after=settings.resend_after,
                            checkpoints=checkpoints, retention_days=settings.history_retention_days,
                            holder_alive=holder_alive,
                            optimistic=settings.concurrency == "optimistic",
                            payloads=Payloads(
                                Limits(record=size_limit(settings.store), record_names=tuple(settings.store),
                                       message=0 if bus is not None else size_limit(settings.stream),
                                       message_names=tuple(settings.stream)),
                                _offload(settings)))
    return Wiring(settings, stores, routes, metrics, dispatcher, embedded, chaos, volatile)


def _offload(settings: Settings) -> Offload | None:
    if not settings.offload:
        return None
    from sources.registry import open_adapter

    url = settings.offload["store"]
    store = open_adapter("payloads", url, **({"endpoint_url": settings.endpoints.get(url), "aws": settings.aws or None}
                                              if url.startswith("s3://") else {}))
    return Offload(store, settings.offload["threshold"])


def check_delays(machines: dict[str, Machine], settings: Settings, routes: Routes, volatile: bool) -> None:
    """Refuse a state ``timeout`` that nothing can hold until it fires: no bus delays
    that long and no durable timer store is configured (say, a memcached store with no
    timer table). Found at load, it is a message naming the state and the fix; found at
    run time, it would be an instance waiting for ever."""
    longest = max((routes.bus.max_delay, routes.retry.max_delay if routes.retry else 0.0))
    durable = routes.timers is not None and not volatile
    problems = []
    for machine in machines.values():
        for state in machine.states.values():
            if state.timeout and state.timeout > longest and not durable:
                held = (f"{', '.join(settings.store)} holds no timers" if volatile or routes.timers is None
                        else "")
                problems.append(
                    f"{machine.source or machine.name}: machine {machine.name!r} state {state.name!r} has "
                    f"`timeout: {state.timeout:g}`, which needs a durable timer store, but {held or 'none is set'}"
                    f" and {routes.bus.url} delays at most {routes.bus.max_delay:g} s; add a DynamoDB timer "
                    "table (arn:aws:dynamodb:...) or a standard SQS queue to settings `retry:`, or keep "
                    "instances in a store that holds timers (sqlite, redis, DynamoDB)")
    if problems:
        raise InvalidDefinition(problems)


def default_config_path() -> str:
    """``FSM_CONFIG``, else ``$LAMBDA_TASK_ROOT/fsm.yaml``, else ``./fsm.yaml``."""
    if os.environ.get("FSM_CONFIG"):
        return os.environ["FSM_CONFIG"]
    task_root = os.environ.get("LAMBDA_TASK_ROOT")
    if task_root and (Path(task_root) / "fsm.yaml").exists():
        return str(Path(task_root) / "fsm.yaml")
    return "fsm.yaml"


@dataclass
class App:
    """What one process loads once: machines, settings, and the backends they name."""

    definitions: Definitions
    settings: Settings
    wiring: Wiring

    @classmethod
    def load(cls, config: str | None = None, *, definitions: Definitions | None = None,
             settings: Settings | None = None, settings_file: str | None = None, **flags: Any) -> App:
        """Load what is not given: machines from ``config`` (default
        :func:`default_config_path`), settings from their layers (``flags`` on top)."""
        if definitions is None:
            from config.loader import load_file

            definitions = load_file(config or default_config_path(), settings_file=settings_file)
        if settings is not None:
            return cls(definitions, settings, build(definitions.machines, settings))
        settings = load_settings(definitions.settings, settings_file, **flags)
        # Outside Lambda an unnamed target is none whatever the layers say: no need to read them.
        named = not os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or \
            metrics_target_named(definitions.settings, settings_file)
        metrics = open_metrics(settings, target_named=named)
        return cls(definitions, settings, build(definitions.machines, settings, metrics=metrics))


def running_in_lambda(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("AWS_LAMBDA_FUNCTION_NAME")) and not bool(env.get("FSM_ALLOW_EMBEDDED"))


def load_for_lambda(config: str | None = None) -> App:
    """The handler's cold start: the machines file's folder on ``sys.path`` (its actions
    import without PYTHONPATH), and a refusal of the embedded bus, which nothing drains
    between invocations."""
    from config.loader import search_beside

    path = Path(config or default_config_path())
    if path.is_file():
        search_beside(path)
    application = App.load(str(path))
    if application.wiring.embedded and running_in_lambda():
        raise InvalidDefinition(
            "settings: no `stream:` is configured, so the embedded in-process bus would carry this function's "
            "next messages, and nothing drains it between invocations; set `stream:` (settings file, the "
            "config's `settings:`, or FSM_STREAM) to the queue, stream, topic or table that triggers this function")
    return application
