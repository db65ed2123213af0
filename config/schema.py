"""Every key the YAML accepts, in one place: each later addition is one entry here.

A key maps to (accepted types, description used in error messages). Keys not in
``REQUIRED`` are optional; an optional key given with no value (``timeout:``) counts as
absent, so the default applies.
"""

from __future__ import annotations

import math
from typing import Any

NUMBER = (int, float)
YEAR = 365 * 24 * 3600  # seconds

TOP_LEVEL = {
    "machines": (list, "the list of machines and `- import: file.yaml` entries"),
    "settings": (dict, "backend roles and options, see the settings reference"),
}
IMPORT = {"import": (str, "a YAML file whose machines are added here")}
XSTATE = {
    "xstate": (str, "an XState v5 machine config (JSON) to load unchanged"),
    "name": (str, "the machine's name; default the JSON's `id`, else the file's stem"),
    "actions": (dict, "the JSON's action names -> module.Class (fsm.Action subclasses)"),
    "guards": (dict, "the JSON's guard names -> module.Class (fsm.Guard subclasses)"),
    "actors": (dict, "the JSON's invoked actor names (`src`) -> module.Class (fsm.Action subclasses)"),
    "max_retries": (int, "retries of a failing step before the error event or failure; default 5"),
    "retry_base_delay": (NUMBER, "seconds; full-jitter backoff base; default 1"),
    "retry_max_delay": (NUMBER, "seconds; full-jitter backoff cap; default 60"),
    "version": ((str, int), "the definition's version"),
}
ASL = {
    "asl": (str, "an Amazon States Language definition (Step Functions JSON) to run"),
    "name": (str, "the machine's name; default the file's stem, less a trailing `.asl`"),
    "resources": (dict, "each Task `Resource` (an ARN or name) -> module.Class (fsm.Action) or {class, params}"),
    "version": ((str, int), "the definition's version"),
}
MACHINE = {
    "name": (str, "the machine's name"),
    "states": (list, "the machine's states"),
    "max_retries": (int, "retries of a failing transition before the instance fails; default 5, 0 for none"),
    "retry_base_delay": (NUMBER, "seconds; full-jitter backoff base; default 1"),
    "retry_max_delay": (NUMBER, "seconds; full-jitter backoff cap; default 60"),
    "version": ((str, int), "the definition's version; messages for another version are rejected"),
    "parallel": (bool, "the top-level states are regions, all active at once"),
    "migrations": (list, "how instances of older versions move to this one (`fsm migrate`)"),
}
MIGRATION = {
    "from": ((int, str), "the version whose instances this moves"),
    "states": (dict, "old state path -> new state path; a state not named keeps its name"),
    "action": ((str, dict), "an fsm.Action that transforms the context (execute(context, obj))"),
}
MACHINE_DEFAULTS = {"max_retries": 5, "retry_base_delay": 1.0, "retry_max_delay": 60.0, "version": ""}
STATE = {
    "name": (str, "the state's name"),
    "entry_action": ((str, dict), "action run when the state is entered"),
    "do_action": ((str, dict), "action run after entry; returns the next event"),
    "exit_action": ((str, dict), "action run when the state is left"),
    "initial": (bool, "the state a new instance starts in; exactly one per machine"),
    "final": (bool, "entering it ends the instance"),
    "transitions": (list, "the events this state accepts"),
    "timeout": (NUMBER, "seconds after entering the state at which `timeout_event` fires"),
    "timeout_event": (str, "the event a timeout sends; default `timeout`"),
    "states": (list, "child states: this state is compound (one child `initial: true`) or parallel"),
    "parallel": (bool, "the child states are regions, all active at once"),
    "history": (str, "shallow or deep: a history pseudo-state; a transition to it restores its parent"),
    "target": (str, "a history state's default, when nothing was recorded yet"),
    "max_retries": (int, "retries of a failing step in this state, overriding the machine's"),
    "invoke": (dict, "a child instance of another machine runs while the state is active: {machine, input}"),
    "map": (dict, "one child instance per item of a list in the context: {items, machine, input, ...}"),
}
TRANSITION = {
    "event": (str, "the event that triggers it"),
    "target": (str, "the state it leads to"),
    "action": ((str, dict), "action run between the old state's exit and the new state's entry"),
    "local": (bool, "run the next hop in the same invocation, without a message"),
    "guard": ((str, dict), "an fsm.Guard subclass; the transition is taken only when it passes"),
    "after": (NUMBER, "seconds in the state after which the transition is taken (a durable timer)"),
    "always": (bool, "eventless: taken as soon as its guard passes"),
    "done": (bool, "taken when this compound state's final child is entered, or all its regions finished"),
    "internal": (bool, "a transition to the state itself or a descendant does not exit and re-enter it"),
}
ACTION = {
    "class": (str, "dotted path of an fsm.Action subclass"),
    "params": (dict, "given to the action as self.params"),
}
# key -> (lowest, whether the lowest itself is allowed, highest, unit). YAML reads `.nan`,
# `.inf` and any number: a timeout of `.inf` or a retry delay of NaN would leave an
# instance waiting forever, and a million retries is a loop, not a policy.
RANGES: dict[str, tuple[float, bool, float, str]] = {
    "max_retries": (0, True, 1000, ""),
    "retry_base_delay": (0, True, YEAR, " seconds"),
    "retry_max_delay": (0, True, YEAR, " seconds"),
    "timeout": (0, False, YEAR, " seconds"),
    "after": (0, True, YEAR, " seconds"),
}
REQUIRED = {
    "import": ("import",),
    "xstate": ("xstate",),
    "migration": ("from",),
    "machine": ("name", "states"),
    "state": ("name",),
    "transition": (),
    "action": ("class",),
    "invoke": ("machine",),
    "map": ("items", "machine"),
}


def accepts(value: Any, types: type | tuple[type, ...]) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):  # YAML `true` is an int to Python; only bool keys take it
        return bool in types
    return isinstance(value, types)


def describe_type(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    if float in types:  # "a number" covers integers too
        types = tuple(t for t in types if t is not int)
    names = {int: "an integer", float: "a number", str: "a string", dict: "a mapping", list: "a list",
             bool: "true or false"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def out_of_range(key: str, value: float) -> str | None:
    """What is wrong with a number outside the key's range (naming the range), or None."""
    low, low_allowed, high, unit = RANGES[key]
    span = f"{low} to {high}{unit}" if low_allowed else f"more than {low}, up to {high}{unit}"
    span += " (a year)" if high == YEAR else ""
    if isinstance(value, float) and not math.isfinite(value):  # an int may be too big for isfinite
        wrong = "a finite number"
    elif value < low or (value == low and not low_allowed):
        wrong = f"{low} or more" if low_allowed else f"more than {low}{unit}"
    elif value > high:
        wrong = f"at most {high}{unit}"
    else:
        return None
    shown = repr(value) if len(repr(value)) <= 20 else f"a number of {len(repr(value))} digits"
    return f"must be {wrong}, got {shown}; the range is {span}"


def value_or(raw: dict[str, Any], key: str, allowed: dict[str, tuple[Any, str]], default: Any) -> Any:
    """The key's value, or ``default`` when it is absent or of a type the schema rejects
    (the loader has reported that already)."""
    value = raw.get(key)
    return value if value is not None and accepts(value, allowed[key][0]) else default
