"""One error family for the whole framework.

Failover and retry decisions look at the *type* of an error, never at sentinel return
values: a backend adapter raises :class:`RecoverableError` for faults worth trying
elsewhere (connection refused, timeout, throttling, 5xx, a missing resource) and lets
everything else through as a plain :class:`BackendError`.
"""

from __future__ import annotations


class FsmError(Exception):
    """Root of every error the framework raises on purpose."""


class InvalidDefinition(FsmError):
    """A machine definition or settings file is wrong; the message names file and line."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ShadowedModule(FsmError):
    """A user's module (say ``config.py``) hides one of the framework's packages."""


# ---- run time: the machine itself ------------------------------------------------------


class TransitionError(FsmError):
    """The machine cannot go on and retrying cannot help (unknown event, local loop)."""


class UnknownEvent(TransitionError):
    def __init__(self, event: str | None, state: str, allowed: list[str]):
        self.event, self.state, self.allowed = event, state, allowed
        accepted = ", ".join(sorted(allowed)) or "none (it has no transitions)"
        super().__init__(f"state {state!r} has no transition on event {event!r}; it accepts: {accepted}")


class LocalHopLimit(TransitionError):
    pass


class Failed(TransitionError):
    """Raised by an action: the step failed for good, no retry. ``error`` names it
    (``Payment.Declined``, ``States.TaskFailed``), ``cause`` says why. A state (or an
    ancestor) with a transition on ``error`` takes it with ``{"error", "cause"}`` as
    data; otherwise the instance ends ``failed`` and its status shows both."""

    def __init__(self, error: str, cause: str = ""):
        self.error, self.cause = error, cause
        super().__init__(f"{error}: {cause}" if cause else error)


class ContextNotSerialisable(FsmError):
    def __init__(self, key: str, value: object):
        self.key = key
        super().__init__(
            f"context key {key!r} holds a {type(value).__name__}, which is not JSON-serialisable"
        )


# ---- messages and instances -------------------------------------------------------------


class MalformedMessage(FsmError):
    """A message that can never be processed: it is dead-lettered, never retried."""


class UnknownMachine(FsmError):
    """A machine name the loaded definitions do not have (bad input, not a runtime failure)."""


class InstanceError(FsmError):
    """A request about one instance that cannot be honoured (unknown id, finished, ...)."""


class UnknownInstance(InstanceError):
    pass


class EventRejected(InstanceError):
    pass


class PayloadTooLarge(TransitionError):
    """A step's context is larger than a configured store or stream can hold."""


class WaitTimeout(InstanceError):
    """``send_event(wait=...)``: the event is queued but was not applied in time."""


# ---- backends ---------------------------------------------------------------------------


class BackendError(FsmError):
    """A store, bus or metrics backend failed."""


class RecoverableError(BackendError):
    """Worth trying on the secondary backend or later: the request itself was fine."""


class SendFailed(RecoverableError):
    """Sending a message failed on every bus after its transition was committed: the
    redelivered message re-sends it. Never a reason to switch stores."""


class PartialBatchError(BackendError):
    """Some entries of a batched send failed; ``failed`` holds their indices."""

    def __init__(self, failed: list[int], recoverable: bool, detail: str = ""):
        self.failed, self.recoverable = failed, recoverable
        super().__init__(f"{len(failed)} entries of a batch failed{': ' + detail if detail else ''}")


class UnknownBackend(FsmError):
    pass


class MissingDependency(FsmError):
    pass
