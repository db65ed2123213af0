"""lambda-fsm: durable finite-state-machine workflows on AWS Lambda."""

from __future__ import annotations

from .errors import Failed, FsmError, InvalidDefinition
from .model import Action, Context, Guard, Machine, State, Transition, max_retry_event

__all__ = ["Action", "Context", "Failed", "FsmError", "Guard", "InvalidDefinition", "Machine", "State",
           "Transition", "max_retry_event"]
__version__ = "0.1.0"
