"""Run a container task on ECS from a state, and turn its end into an event.

``RunTask``, the do action of the state that waits for the task, starts the task and
returns ``None``: the instance waits in that state without holding a Lambda (or a
worker) for the task's whole run, and nothing polls ``DescribeTasks``. The task's end comes back as an event, by one of two roads that
carry the same event id, so whichever is applied first wins and the other is
acknowledged as a duplicate:

- the code in the container calls :func:`fsm.container.report` (or ``fsm send``) with
  an event of its choosing, through the stream;
- EventBridge delivers the "ECS Task State Change" event of the stopped task to the
  Lambda handler, which reads it with :func:`sources.ecs.event_from_task_change`: exit code 0 of the task's
  container is the event ``done``, anything else ``failed`` (data: ``exit_code``,
  ``reason``, ``task_arn``, ``stop_code``). These two names are fixed: give the state
  transitions on both.

A task that never reports (stuck, or its events lost) is the state's job, not the
action's: declare ``timeout: SECONDS`` on the state and a transition on its timeout
event. The action cannot wait, so it takes no ``timeout`` param.

What the task needs to find its instance travels in the container's environment
(``FSM_CORRELATION_ID``, ``FSM_STEP``, ``FSM_MACHINE``, ``FSM_STATE``,
``FSM_EVENT_ID``, ``FSM_REPORT_TO`` and, when set, ``FSM_ENDPOINT_URL``), because ECS
echoes ``overrides.containerOverrides[].environment`` in its events. Task overrides are
limited to 8 KB, so large inputs stay in the instance's context, which the task reads
with ``fsm status "$FSM_CORRELATION_ID" --json`` or ``fsm.client.status(...)``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

from fsm import Action, Context
from fsm.errors import FsmError, InvalidDefinition, TransitionError
from sources.ecs import DONE_EVENT, ENV_CORRELATION_ID, ENV_EVENT_ID, FAILED_EVENT  # noqa: F401

STARTED_BY_PREFIX = "fsm:"
MAX_STARTED_BY = 36         # ECS limit on ``startedBy``
MAX_CLIENT_TOKEN = 64       # ECS limit on ``clientToken``
MAX_OVERRIDES_BYTES = 8192  # ECS limit on the JSON of ``overrides``, formatting included
CONTEXT_KEY = "ecs_task_arn"

ENV_STEP = "FSM_STEP"
ENV_MACHINE = "FSM_MACHINE"
ENV_STATE = "FSM_STATE"
ENV_REPORT_TO = "FSM_REPORT_TO"
ENV_ENDPOINT_URL = "FSM_ENDPOINT_URL"

PARAMS = {
    "cluster": "the cluster name or ARN (required)",
    "task_definition": "family, family:revision or ARN (required)",
    "launch_type": "EC2, FARGATE or EXTERNAL",
    "network_configuration": "RunTask's networkConfiguration (awsvpc: FARGATE needs it)",
    "container": "the container that gets the FSM_* environment; default: the task "
                 "definition's first essential container",
    "overrides": "RunTask's overrides, merged with the FSM_* environment",
    "env_from_context": "{ENV_NAME: context_key}: small context values for the container",
    "options": "any other RunTask parameters, passed as given (propagateTags, tags, ...)",
    "report_to": "the stream the container reports to; default: the first of FSM_STREAM",
    "report_endpoint_url": "endpoint of that stream for the container (moto, LocalStack)",
    "region": "the ECS client's region",
    "endpoint_url": "the ECS client's endpoint (moto, LocalStack)",
    "aws": "client options: connect_timeout, read_timeout, max_attempts",
    "client": "an ECS client (tests; not from YAML)",
}


class TaskNotStarted(FsmError):
    """ECS accepted the call but placed no task (no capacity, say): worth a retry."""


class OverridesTooLarge(TransitionError):
    """Retrying cannot shrink them, so the instance fails at once with this message."""


def task_event_id(correlation_id: str, step: int) -> str:
    """One id per (instance, step) at which the task was started.

    It leaves out the fence on purpose: a re-run of the same step (a retry, a worker
    taking over after a crash, ``fsm retry``) gets a new fence but must produce the same
    id, so ECS's client token starts one task and its reports dedupe against each other.
    """
    return f"task:{correlation_id}:{step}"


def client_token(event_id: str) -> str:
    return hashlib.sha256(event_id.encode()).hexdigest()[:MAX_CLIENT_TOKEN]


def started_by(correlation_id: str) -> str:
    """``fsm:`` and a digest of the instance id: findable with ``ListTasks(startedBy=)``,
    and within ECS's 36 characters whatever the id's length."""
    digest = hashlib.sha256(correlation_id.encode()).hexdigest()
    return (STARTED_BY_PREFIX + digest)[:MAX_STARTED_BY]


class RunTask(Action):
    """Start one ECS task and wait, durably, for it to report (see the module doc)."""

    client: Any = None  # a boto3 ECS client; tests may set it on the class or an instance

    def __init__(self, name: str = "", params: Mapping[str, Any] | None = None):
        params = dict(params or {})
        injected = params.pop("client", None)
        super().__init__(name, params)
        _check_params(self.name, self.params)
        if injected is not None:
            self.client = injected
        self._container: str | None = self.params.get("container")
        self._report: tuple[str, str] | None = None
        # Two locks: looking the container up builds the client, under its own lock.
        self._container_lock = threading.Lock()
        self._client_lock = threading.Lock()

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        event_id = task_event_id(context.correlation_id, context.steps)
        overrides = merged_overrides(self.params.get("overrides"), self.container_name(),
                                     self.environment(context, event_id))
        check_overrides_size(overrides)
        request: dict[str, Any] = {
            **dict(self.params.get("options") or {}),
            "cluster": self.params["cluster"],
            "taskDefinition": self.params["task_definition"],
            "count": 1,
            "startedBy": started_by(context.correlation_id),
            "clientToken": client_token(event_id),
            "overrides": overrides,
        }
        if self.params.get("launch_type"):
            request["launchType"] = self.params["launch_type"]
        if self.params.get("network_configuration"):
            request["networkConfiguration"] = self.params["network_configuration"]
        reply = self._call("run_task", **request)
        tasks = reply.get("tasks") or []
        if not tasks:
            failures = "; ".join(f"{f.get('arn', '')} {f.get('reason', '')} {f.get('detail', '')}".strip()
                                 for f in reply.get("failures") or []) or "no reason given"
            raise TaskNotStarted(f"ECS placed no task of {self.params['task_definition']!r} on cluster "
                                 f"{self.params['cluster']!r}: {failures}")
        context[CONTEXT_KEY] = tasks[0].get("taskArn", "")
        return None

    def environment(self, context: Context, event_id: str) -> dict[str, str]:
        """What the container needs to report, plus the context values it asked for."""
        report_to, endpoint = self.report_target()
        env = {ENV_CORRELATION_ID: context.correlation_id, ENV_STEP: str(context.steps),
               ENV_MACHINE: context.machine_name,
               ENV_STATE: context.current_state.name if context.current_state else "",
               ENV_EVENT_ID: event_id, ENV_REPORT_TO: report_to}
        if endpoint:
            env[ENV_ENDPOINT_URL] = endpoint
        for variable, key in (self.params.get("env_from_context") or {}).items():
            if key in context:
                value = context[key]
                env[str(variable)] = value if isinstance(value, str) else json.dumps(value)
        return env

    def report_target(self) -> tuple[str, str]:
        """The stream ARN (and endpoint) the container reports to: ``report_to``, else the
        first ``stream`` of the settings from the environment (``FSM_STREAM``,
        ``FSM_SETTINGS``). Empty on the embedded runtime, which has no stream: then only
        the ECS event reports."""
        if self._report is None:
            report_to = self.params.get("report_to") or ""
            endpoint = self.params.get("report_endpoint_url") or ""
            if not report_to:
                from config.settings import load_settings

                settings = load_settings()
                report_to = settings.stream[0] if settings.stream else ""
                endpoint = endpoint or settings.endpoints.get(report_to, "")
            self._report = (report_to, endpoint)
        return self._report

    def container_name(self) -> str:
        """The ``container`` param, else the task definition's first essential container,
        asked for once per action (the definition is shared by every instance)."""
        if self._container is None:
            with self._container_lock:
                if self._container is None:
                    reply = self._call("describe_task_definition", taskDefinition=self.params["task_definition"])
                    self._container = first_container(reply.get("taskDefinition") or {},
                                                      self.params["task_definition"])
        return self._container

    def ecs(self) -> Any:
        if self.client is None:
            with self._client_lock:
                if self.client is None:
                    from sources.aws import make_client

                    self.client = make_client("ecs", region=self.params.get("region"),
                                              endpoint_url=self.params.get("endpoint_url"),
                                              aws=self.params.get("aws"))
        return self.client

    def _call(self, operation: str, **request: Any) -> Any:
        from sources.aws import classify

        try:
            return getattr(self.ecs(), operation)(**request)
        except Exception as exc:
            raise classify(exc, f"ecs {operation} on cluster {self.params['cluster']}") from exc


def _check_params(name: str, params: Mapping[str, Any]) -> None:
    if "timeout" in params:
        raise InvalidDefinition(f"{name}: RunTask cannot wait for its task, so it takes no `timeout`; "
                                "declare `timeout: SECONDS` on the state, with a transition on its "
                                "timeout event")
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise InvalidDefinition(f"{name}: unknown params {unknown}; allowed: {', '.join(PARAMS)}")
    missing = [key for key in ("cluster", "task_definition") if not params.get(key)]
    if missing:
        raise InvalidDefinition(f"{name}: params {missing} are required")
    for key in ("overrides", "options", "network_configuration", "env_from_context", "aws"):
        if params.get(key) is not None and not isinstance(params[key], Mapping):
            raise InvalidDefinition(f"{name}: params {key!r} must be a mapping")


def first_container(definition: Mapping[str, Any], label: str) -> str:
    containers = definition.get("containerDefinitions") or []
    essential = [c for c in containers if c.get("essential", True)]
    chosen = (essential or containers or [{}])[0].get("name")
    if not chosen:
        raise InvalidDefinition(f"task definition {label!r} has no containers to give the environment to")
    return str(chosen)


def merged_overrides(base: Mapping[str, Any] | None, container: str, env: Mapping[str, str]) -> dict[str, Any]:
    """``base`` with ``env`` added to ``container``'s override; our names win over the
    user's. ``base`` belongs to the shared action, so it is copied, never changed."""
    overrides: dict[str, Any] = json.loads(json.dumps(dict(base or {})))
    entries = list(overrides.get("containerOverrides") or [])
    target = next((e for e in entries if e.get("name") == container), None)
    if target is None:
        target = {"name": container}
        entries.append(target)
    kept = [e for e in target.get("environment") or [] if e.get("name") not in env]
    target["environment"] = kept + [{"name": k, "value": v} for k, v in env.items()]
    overrides["containerOverrides"] = entries
    return overrides


def check_overrides_size(overrides: Mapping[str, Any]) -> None:
    size = len(json.dumps(overrides, separators=(",", ":")).encode())
    if size > MAX_OVERRIDES_BYTES:
        raise OverridesTooLarge(
            f"ECS task overrides would be {size} bytes, above ECS's {MAX_OVERRIDES_BYTES}: keep large "
            "inputs in the instance's context and have the task read them with "
            "`fsm status \"$FSM_CORRELATION_ID\" --json` (or fsm.client.status)")
