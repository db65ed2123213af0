"""``fsm.handler.lambda_handler``: one Lambda entry point for every event source.

Machines, settings and backends are loaded once per container, on the first event; the
machines file's folder goes on ``sys.path`` so its actions import without PYTHONPATH.
What each event means is :mod:`fsm.app.intake`'s business.
"""

from __future__ import annotations

import os
from typing import Any

from .shadow import check_packages

check_packages()

from .app.intake import handle_event
from .app.wiring import App, load_for_lambda

__all__ = ["App", "app", "handle_event", "lambda_handler"]

_app: App | None = None


def app() -> App:
    global _app
    if _app is None:
        from .logs import configure

        configure(os.environ.get("FSM_LOG_LEVEL", "INFO"))
        _app = load_for_lambda()
    return _app


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return handle_event(app(), event)
