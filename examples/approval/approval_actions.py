"""Actions of the expense approval machine (examples/approval/fsm.yaml).

An expense is given with ``--context '{"employee": "ada", "amount_cents": 12000,
"purpose": "train tickets"}'``. Decisions arrive as events whose data says who decided
(``{"by": "maria"}``) and, for REJECT, why (``{"reason": ...}``). The framework merges
event data into the context; :func:`_decision` consumes those keys so the stored
expense keeps a clean audit trail (``decisions``) instead of the last request's fields.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from fsm import Action, Context


def _decision(context: Context, verdict: str) -> dict[str, Any]:
    entry = {"verdict": verdict, "by": str(context.pop("by", "unknown")),
             "state": context.current_state.name if context.current_state else None,
             "at": round(time.time(), 3)}
    reason = context.pop("reason", None)
    if reason:
        entry["reason"] = str(reason)
    context.setdefault("decisions", []).append(entry)
    return entry


class CheckExpense(Action):
    """Refuse malformed claims at once, and send large ones straight to a director
    (``params.director_above_cents``): a manager could only escalate them anyway."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        amount = context.get("amount_cents")
        if not isinstance(amount, int) or amount <= 0 or not context.get("employee"):
            context["problem"] = "an expense needs `employee` and a positive whole `amount_cents`"
            return "invalid"
        context["decisions"] = []
        if amount > int(self.params.get("director_above_cents", 100_000)):
            return "needs_director"
        return "needs_manager"


class RecordApproval(Action):
    """Transition action of APPROVE (from either waiting state)."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        _decision(context, "approved")
        return None


class RecordRejection(Action):
    """Transition action of REJECT (and of a director's timeout): the reason is what
    the employee will read, so there always is one."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        if context.current_event == "timeout":
            context.setdefault("by", "timeout")
            context.setdefault("reason", "no decision in time")
        entry = _decision(context, "rejected")
        entry.setdefault("reason", "no reason given")
        return None


class RecordEscalation(Action):
    """Transition action of ESCALATE: the manager hands the decision to a director."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        _decision(context, "escalated")
        return None


class BookExpense(Action):
    """Write the ledger entry. The entry id comes from the instance, so the retry of a
    transition that failed after booking books the same entry again, not a second one.

    Its ``booked`` transition is ``local: true``: bookkeeping and scheduling the payout
    run in the same invocation, with no message (and no queue wait) between them, yet
    they are still two steps in the history.
    """

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        digest = hashlib.sha256(context.correlation_id.encode()).hexdigest()[:10]
        context["ledger_entry"] = {"id": f"led_{digest}", "account": str(self.params.get("account", "6000")),
                                   "cents": context["amount_cents"]}
        return "booked"


class SchedulePayout(Action):
    """Queue the reimbursement with the next payroll run."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context["payout"] = {"to": context["employee"], "cents": context["amount_cents"],
                             "run": str(self.params.get("payroll_run", "next"))}
        return "scheduled"
