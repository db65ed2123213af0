"""Settings -> adapters -> a Dispatcher. The one place that opens backends by role."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.settings import Settings, load_settings

from .dispatcher import Dispatcher, Routes
from .model import Machine
from .ports import EventBus, InstanceStore, Metrics, NullMetrics, TimerStore

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


def open_metrics(settings: Settings) -> Metrics:
    target = settings.metrics.get("target", "none")
    namespace = settings.metrics.get("namespace", "lambda-fsm")
    if target == "cloudwatch":
        from sources.cloudwatch import CloudWatchMetrics

        return CloudWatchMetrics(namespace, aws=settings.aws or None)
    if target == "emf":
        from sources.emf import EmfMetrics

        return EmfMetrics(namespace)
    return NullMetrics()


def _store_timers(settings: Settings, stores: list[InstanceStore], chaos: list[Any],
                  metrics: Metrics, last_resort: list[Any]) -> TimerStore | None:
    """Timers in the stores' own backends (sqlite: the same file; redis; DynamoDB: the
    same table), failing over in the stores' order."""
    from sources.registry import ADAPTERS, scheme_of

    found: list[Any] = []
    for name, store in zip(settings.store, stores):
        if name.startswith("sqlite:"):
            found.append(store)
        elif scheme_of(name) in ADAPTERS["timers"] and not name.startswith("memory:"):
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
    if timer_names:
        timers = open_role("timers", timer_names[0], settings, chaos, metrics)
    else:
        # Embedded, an in-process timer store is the last resort: delays still work there.
        timers = _store_timers(settings, stores, chaos, metrics, [MemoryTimers()] if embedded else [])
    if embedded:
        stream = MemoryBus()
    routes = Routes(bus=stream, retry=open_bus(retry_names, settings, metrics, chaos), timers=timers,
                    dead_letter=open_bus(settings.dead_letter, settings, metrics, chaos),
                    notify=open_bus(settings.notify, settings, metrics, chaos))
    checkpoints = None
    if settings.checkpoint:
        from sources.checkpoints import DynamoCheckpoints

        name = settings.checkpoint[0]
        checkpoints = DynamoCheckpoints(name, endpoint_url=settings.endpoints.get(name), aws=settings.aws or None)
    dispatcher = Dispatcher(machines, stores, routes, metrics=metrics, lease_timeout=settings.lease_timeout,
                            max_local_hops=settings.max_local_hops, resend_after=settings.resend_after,
                            checkpoints=checkpoints, retention_days=settings.history_retention_days)
    return Wiring(settings, stores, routes, metrics, dispatcher, embedded, chaos)


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

            definitions = load_file(config or default_config_path())
        settings = settings or load_settings(definitions.settings, settings_file, **flags)
        return cls(definitions, settings, build(definitions.machines, settings))
