"""The van Gurp/Bosch object model: structure is shared, an instance is only data.

``Machine``, ``State`` and ``Transition`` are built once per process from YAML and never
change (flyweights). Everything that belongs to one running instance lives in its
:class:`Context`, which travels in every message.
"""

from __future__ import annotations

import contextvars
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import codec


class Action:
    """A command object. Subclass it and implement :meth:`execute`.

    ``execute`` returns the next event (a string) or ``None``. ``self.params`` holds the
    ``params:`` mapping given in YAML. Actions are shared by every instance, so keep
    per-instance data in ``context``, never on ``self``.
    """

    def __init__(self, name: str = "", params: Mapping[str, Any] | None = None):
        self.name = name or type(self).__name__
        self.params: dict[str, Any] = dict(params or {})

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        raise NotImplementedError(f"{type(self).__name__}.execute")

    def heartbeat(self) -> None:
        """Say the action is alive: a task with ``HeartbeatSeconds`` (ASL) that does not
        call this often enough fails with ``States.Timeout``. Elsewhere it does nothing."""
        beat = HEARTBEAT.get()
        if beat is not None:
            beat()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# Set by whoever runs an action that has a heartbeat deadline (see fsm.asl).
HEARTBEAT: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("fsm_heartbeat", default=None)


def max_retry_event(event: str) -> Callable:
    """On the instance's last retry, turn an exception from ``execute`` into ``event``.

    Lets a machine route around a step that keeps failing (to a compensation state, say)
    instead of ending ``failed``.
    """

    def decorate(execute: Callable) -> Callable:
        @functools.wraps(execute)
        def wrapper(self: Action, context: Context, obj: dict[str, Any]) -> str | None:
            try:
                return execute(self, context, obj)
            except Exception:
                if context.retries >= context.max_retries:
                    return event
                raise

        return wrapper

    return decorate


class Guard:
    """A condition on a transition. Subclass it and implement :meth:`check`.

    ``check`` gets the instance's context and the event's data and returns whether the
    transition may be taken. ``self.params`` holds the ``params:`` given in YAML (or an
    XState guard object). Guards are shared by every instance and must not change the
    context: they may run several times per event.
    """

    def __init__(self, name: str = "", params: Mapping[str, Any] | None = None):
        self.name = name or type(self).__name__
        self.params: dict[str, Any] = dict(params or {})

    def check(self, context: Context, event_data: Mapping[str, Any]) -> bool:
        raise NotImplementedError(f"{type(self).__name__}.check")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


@dataclass(frozen=True)
class Transition:
    """``event`` is ``""`` for an eventless transition; ``target`` is the first target's
    path (``None``: a targetless transition, which runs its actions and changes no state).

    ``reenter``: a transition to the source itself or to a descendant of it exits and
    re-enters the source (SCXML ``external``, YAML's default). XState's default is
    ``False``: the source stays active.
    """

    event: str
    target: str | None
    action: Action | None = None
    local: bool = False
    guard: Guard | None = None
    reenter: bool = True
    targets: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()
    delay: float | None = None      # seconds, for an `after` transition
    source: str = ""                # path of the state it belongs to

    def __post_init__(self) -> None:
        if not self.targets and self.target:
            object.__setattr__(self, "targets", (self.target,))
        if not self.actions and self.action is not None:
            object.__setattr__(self, "actions", (self.action,))
        if self.target is None and self.targets:
            object.__setattr__(self, "target", self.targets[0])


@dataclass(frozen=True)
class Invoke:
    """An actor a state runs while it is active: an Action whose return value is the
    ``done`` data; its exception, once retries are used up, is the ``error``."""

    id: str
    actor: Action

    @property
    def done_event(self) -> str:
        return f"xstate.done.actor.{self.id}"

    @property
    def error_event(self) -> str:
        return f"xstate.error.actor.{self.id}"


@dataclass(frozen=True)
class Spawn:
    """Child instances a state runs while it is active: a sub-machine (``invoke:
    {machine}``), one child per item (``map:``), or one per branch (ASL ``Parallel``).

    ``plan(context, event_data)`` gives each child's (machine name, input), in order; it
    runs once, when the state is entered. At most ``max_concurrency`` children run at once
    (0: all). The state's ``done`` event carries ``{"output": [each child's output, in
    plan order]}`` (``single``: the one child's output). A failed child raises ``error``
    with its ``{"error", "cause"}``; with a tolerance (``tolerated_failures``, a count,
    and/or ``tolerated_percentage``), only once a tolerance is exceeded, and then as
    ``States.ExceedToleratedFailureThreshold`` (a tolerated failure's slot in the output
    is ``{"Error", "Cause"}``). Leaving the state cancels the children still running.
    """

    plan: Callable[[Context, Mapping[str, Any]], list[tuple[str, Any]]]
    max_concurrency: int = 0
    tolerated_failures: int | None = None
    tolerated_percentage: float | None = None
    single: bool = False
    machines: tuple[str, ...] = ()   # the machines it may start, for validation and graphs


@dataclass(frozen=True)
class State:
    """A state. Flat machines use the first nine fields; statecharts add the rest.

    ``path`` is the state's unique dotted id (``bake.waiting``; a top-level state's is its
    name). ``on`` holds every transition in document order (guarded ones sharing an
    event, eventless ones with event ``""``, delayed ones, ``done`` and ``error``);
    ``transitions`` maps each event to its first transition, the flat view.
    """

    name: str
    entry_action: Action | None = None
    do_action: Action | None = None
    exit_action: Action | None = None
    initial: bool = False
    final: bool = False
    transitions: Mapping[str, Transition] = field(default_factory=dict)
    timeout: float | None = None
    timeout_event: str = "timeout"
    path: str = ""
    parent: str | None = None
    children: tuple[str, ...] = ()
    parallel: bool = False
    history: str | None = None          # "shallow" | "deep": a history pseudo-state
    on: tuple[Transition, ...] = ()
    entry: tuple[Action, ...] = ()
    exit: tuple[Action, ...] = ()
    invoke: Invoke | None = None
    max_retries: int | None = None
    initial_child: str | None = None    # compound states: the child entered by default
    spawn: Spawn | None = None          # child instances run while the state is active

    def __post_init__(self) -> None:
        if not self.path:
            object.__setattr__(self, "path", self.name)
        if not self.on and self.transitions:
            object.__setattr__(self, "on", tuple(self.transitions.values()))
        if not self.transitions and self.on:
            first: dict[str, Transition] = {}
            for t in self.on:
                first.setdefault(t.event, t)
            object.__setattr__(self, "transitions", first)
        if not self.entry and self.entry_action is not None:
            object.__setattr__(self, "entry", (self.entry_action,))
        if not self.exit and self.exit_action is not None:
            object.__setattr__(self, "exit", (self.exit_action,))

    @property
    def compound(self) -> bool:
        return bool(self.children) and not self.parallel

    @property
    def atomic(self) -> bool:
        return not self.children and self.history is None

    @property
    def events(self) -> list[str]:
        return [e for e in self.transitions if e and not e.startswith("xstate.")]

    @property
    def external_events(self) -> list[str]:
        """The events an outsider may send here, sorted: the state's own timeout event
        is fired by its timer, not sent."""
        return sorted(e for e in self.events if not (self.timeout and e == self.timeout_event))


@dataclass(frozen=True)
class Migration:
    """How instances of version ``source`` move to the machine that declares it: each
    active state by ``states`` (a state not named keeps its name), then ``action`` may
    change the context."""

    source: str
    states: Mapping[str, str] = field(default_factory=dict)
    action: Action | None = None


@dataclass(frozen=True)
class Machine:
    """``states`` maps every state's path to it, in document order (a parent before
    its children). ``initial`` is the top-level initial state; ``parallel`` makes the
    top level one set of regions. ``xstate``: the context changes only through actions
    (event data is not merged into it)."""

    name: str
    states: Mapping[str, State]
    initial: str
    max_retries: int = 5
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    version: str = ""
    source: str = ""  # "file:line" where it was defined, for messages
    parallel: bool = False
    xstate: bool = False
    context: Mapping[str, Any] = field(default_factory=dict)  # the initial context (XState `context`)
    migrations: tuple[Migration, ...] = ()
    top: State | None = None  # the machine's own entry/exit actions and transitions (XState's root)
    versions: Mapping[str, Machine] = field(default_factory=dict)  # every loaded version, this one too
    # How an input becomes an instance's first context (default: the input, a JSON object)
    # and what a finished instance gives its parent and its status as ``output`` (default:
    # its context). ASL machines keep the state's JSON document under one key.
    start: Callable[[Any], dict[str, Any]] | None = None
    output: Callable[[Mapping[str, Any]], Any] | None = None
    # False: instances take no events from outside (ASL executions): while one waits, it
    # waits for its own timers or children, so a local run waits with it.
    takes_events: bool = True

    def at_version(self, version: str) -> Machine | None:
        """This machine as it was at ``version`` (``""``: whatever version is loaded)."""
        if not version or version == self.version:
            return self
        return self.versions.get(version)

    def __post_init__(self) -> None:
        # Each transition knows the state it belongs to (the statechart algorithm needs
        # it); builders may leave it out.
        for path, state in self.states.items():
            if any(t.source != path for t in state.on):
                on = tuple(t if t.source == path else replace(t, source=path) for t in state.on)
                first: dict[str, Transition] = {}
                for t in on:
                    first.setdefault(t.event, t)
                object.__setattr__(state, "on", on)
                object.__setattr__(state, "transitions", first)

    def state(self, name: str) -> State:
        return self.states[name]

    @functools.cached_property
    def roots(self) -> tuple[str, ...]:
        return tuple(p for p, s in self.states.items() if s.parent is None)

    @functools.cached_property
    def order(self) -> dict[str, int]:
        return {path: index for index, path in enumerate(self.states)}

    @functools.cached_property
    def chart(self) -> bool:
        """Whether instances need the statechart record (a configuration, history,
        entry stamps): any nesting, parallel regions, history or delayed transitions.
        A flat machine keeps the one-state record it always had."""
        return self.xstate or self.parallel or any(
            s.children or s.history or s.invoke or s.spawn or any(t.delay is not None or not t.reenter for t in s.on)
            for s in self.states.values())


class Context(dict):
    """User data (a plain dict) plus the instance's system fields as attributes.

    Only the dict items are user data; the attributes are filled in by the dispatcher.
    """

    correlation_id: str
    machine_name: str
    steps: int
    retries: int
    max_retries: int
    current_state: State | None
    current_event: str | None

    def __init__(self, data: Mapping[str, Any] | None = None, *, correlation_id: str = "",
                 machine: Machine | None = None, steps: int = 0, retries: int = 0,
                 current_state: State | None = None, current_event: str | None = None):
        super().__init__(data or {})
        self.correlation_id = correlation_id
        self.machine_name = machine.name if machine else ""
        self.max_retries = machine.max_retries if machine else 0
        self.steps = steps
        self.retries = retries
        self.current_state = current_state
        self.current_event = current_event

    def user_data(self) -> dict[str, Any]:
        """The user data, checked to be JSON: a bad value is named, never replaced."""
        data = dict(self)
        check_json(data)
        return data


def check_json(data: Mapping[str, Any]) -> None:
    """Refuse, naming the key, anything JSON would reject or silently change (a non-string
    key becomes a string; NaN is not JSON)."""
    from .errors import ContextNotSerialisable

    for key in data:
        if not isinstance(key, str):
            raise ContextNotSerialisable(repr(key), key)
    try:
        # The fast encoder writes NaN as null: its output proves the data clean only when
        # it holds no null at all; otherwise the standard library decides.
        if "null" not in codec.dumps(data):
            return
    except (TypeError, ValueError):
        pass
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError):
        for key, value in data.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise ContextNotSerialisable(str(key), value) from None
        raise
