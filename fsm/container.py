"""``fsm.container.report``: how code inside an ECS task started by
``actions.ecs.RunTask`` tells its instance how the work went (see :mod:`fsm.app.container`)."""

from __future__ import annotations

from .app.container import REQUIRED, ReportError, report

__all__ = ["REQUIRED", "ReportError", "report"]
