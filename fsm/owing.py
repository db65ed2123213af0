"""What a step comes to owe: the messages its commit puts in the outbox besides its own
next step (the timers of the states it entered, its children's first steps, cancels for
the children it no longer waits for, its result to its parent), what a failed or
cancelled instance owes its family, and the first record, which owes the message that
made it. Built here, committed and sent by the :class:`~fsm.dispatcher.Dispatcher`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import codec, join
from .errors import TransitionError
from .inbox import timer_id
from .message import Kind, Message
from .model import Context, Machine
from .outbox import entries
from .payloads import Payloads
from .record import Record, Status, new_record


def family(machines: Mapping[str, Machine], payloads: Payloads, machine: Machine, msg: Message, record: Record,
           run: Any, context: Context, now: float) -> list[Message]:
    """What a step owes its family: its new children's first steps, cancels for the
    children it no longer waits for, and, when it finished the instance, its output
    to its parent."""
    if not (run.starts or run.stops or (run.status == Status.DONE and record.get("parent"))):
        return []       # the common step: nothing owed to any other instance
    sent: list[Message] = []
    parent = {"id": msg.correlation_id, "machine": machine.name, "version": machine.version, "store": msg.store}
    for start in run.starts:
        child = machines.get(start.machine)
        if child is None:
            raise TransitionError(f"state {start.state!r} starts machine {start.machine!r}, which is not loaded")
        if child.start is not None:
            given = child.start(start.input)
        elif isinstance(start.input, dict):
            given = start.input
        else:
            raise TransitionError(f"the input of child {start.index} of state {start.state!r} must be a JSON "
                                  f"object (machine {child.name!r} takes its context from it), got "
                                  f"{type(start.input).__name__}")
        given = {**codec.copy(dict(child.context)), **given}
        sent.append(join.start_message(start, child, parent, payloads.stow(start.child_id, "0-start", given), now))
    sent += [join.stop_message(stop, msg.correlation_id, now) for stop in run.stops]
    if run.status == Status.DONE and record.get("parent"):
        data = payloads.stow(msg.correlation_id, f"{context.steps}-output", {
            "output": machine.output(context) if machine.output else context.user_data()})
        too_big = payloads.too_big(data, True, "output")
        if too_big is not None:
            raise too_big
        result = join.result_message(record, data, now)
        if result is not None:
            sent.append(result)
    return sent


def ended(record: Record, error: dict[str, Any], now: float) -> list[Message]:
    """An instance failed or was cancelled: its parent hears of it, its running
    children are cancelled."""
    sent = [join.stop_message(stop, record["id"], now)
            for running in ((record.get("chart") or {}).get("joins") or {}).values() for stop in join.running(running)]
    result = join.result_message(record, error, now)
    return sent + ([result] if result is not None else [])


def timers(run: Any, schedule: Any, step: int, base: dict[str, Any]) -> list[tuple[Message, float]]:
    """Timer messages for the states just entered: their ``timeout`` and delayed
    transitions, and a wake-up an action asked for (``obj["schedule"]``, see
    ``actions.wait.Sleep``). Each names the state and the step it was entered at, so
    it is ignored once that state was left or re-entered."""
    if run.status == Status.DONE:
        return []
    found = [(Message(kind=Kind.TIMER, step=t.stamp, event=t.event, state=t.state,
                      event_id=timer_id(t.state, t.stamp, t.event), **base), float(t.delay))
             for t in run.timers]
    if schedule and run.status == Status.WAITING and run.snapshot is not None:
        # The wake-up belongs to the innermost active state (a flat machine's only one).
        state = run.state.split(",")[0]
        stamp = run.snapshot.entered.get(state, step)
        found.append((Message(kind=Kind.TIMER, step=stamp, event=str(schedule["event"]), state=state,
                              event_id=f"wake-{step}", **base), float(schedule["delay"])))
    return found


def first_record(msg: Message, machine: Machine, now: float) -> Record:
    """A new record for ``msg``'s instance: its first step's, or one a step message
    remakes when the store does not have it."""
    record = new_record(msg.correlation_id, machine.name, machine.version, msg.state, msg.step, msg.retries,
                        msg.context, now)
    if msg.chart:
        record["chart"] = msg.chart
    if msg.parent:
        record["parent"] = msg.parent
    # Until its first commit the record owes the message that made it: a worker lost
    # before that commit, with the message lost from the bus too (a queue deleted),
    # leaves an instance the re-send sweep finds and continues.
    record.update(outbox=entries([(msg.evolve(copy=False, busy=0), 0.0)], msg.correlation_id), pending=now)
    return record
