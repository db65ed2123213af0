"""The Python client: start instances, send them events, ask where they are.

``from fsm import client`` then ``client.start(...)`` uses settings from the environment
(``FSM_CONFIG``, ``FSM_SETTINGS``, ``FSM_<KEY>``); ``Client(settings=..., config=...)``
takes them explicitly (see :class:`fsm.app.client.Client`).
"""

from __future__ import annotations

from typing import Any

from .app.client import Client, status_view

__all__ = ["Client", "cancel", "history", "list_instances", "retry", "send_event", "start", "status", "status_view"]

_default: Client | None = None


def _client() -> Client:
    global _default
    if _default is None:
        _default = Client()
    return _default


def start(machine: str, context: dict[str, Any] | None = None, correlation_id: str | None = None) -> str:
    return _client().start(machine, context, correlation_id)


def send_event(correlation_id: str, event: str, data: dict[str, Any] | None = None,
               event_id: str | None = None) -> str:
    return _client().send_event(correlation_id, event, data, event_id)


def status(correlation_id: str) -> dict[str, Any]:
    return _client().status(correlation_id)


def history(correlation_id: str) -> list[dict[str, Any]]:
    return _client().history(correlation_id)


def cancel(correlation_id: str, reason: str = "cancelled") -> None:
    _client().cancel(correlation_id, reason)


def retry(correlation_id: str) -> None:
    _client().retry(correlation_id)


def list_instances(machine: str | None = None, status: str | None = None, state: str | None = None,
                   since: float | str | None = None, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """One page of instances, newest first (see :meth:`fsm.app.client.Client.list`);
    ``client.list`` is the same function."""
    return _client().list(machine, status, state, since, limit, cursor)


# ``client.list(...)``, beside ``client.status(...)``; not in ``__all__``, so that a star
# import never hides the built-in ``list``.
list = list_instances
