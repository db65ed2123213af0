"""The implementations order.json names (mapped in xstate.yaml), written as XState does.

In XState the context changes only through actions: an event's data is not merged into
it. An action reads the event as ``obj["event_data"]`` (``{"pizza": "margherita"}`` for
``fsm send ID ADD_PIZZA --data '{"pizza": "margherita"}'``; ``{"output": ...}`` for an
invoked actor's done event) and assigns what it wants to keep, like XState's
``assign``. An invoked actor (``src``) is an action whose return value is the done
event's ``output``; it reads the context and changes nothing, like a promise actor.

The business rules are pizza_actions.py's, so both versions price, charge and refund
alike.
"""

from __future__ import annotations

from typing import Any

from pizza_actions import (
    change_basket,
    charge,
    driver_for,
    kitchen_ticket,
    menu_of,
    open_order,
    refund,
)

from fsm import Action, Context


def event(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("event_data") or {}


# -- actions ----------------------------------------------------------------------------------


class OpenOrder(Action):
    """``openOrder``, entry of ``ordering``: price the pizzas the context starts with."""

    def execute(self, context: Context, obj: dict[str, Any]) -> None:
        open_order(context, menu_of(self))


class AddPizza(Action):
    """``addPizza``: ADD_PIZZA ``{"pizza": ..., "quantity": n}``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> None:
        data = event(obj)
        change_basket(context, menu_of(self), data.get("pizza"), data.get("quantity", 1), add=True)


class RemovePizza(Action):
    """``removePizza``: REMOVE_PIZZA ``{"pizza": ..., "quantity": n}``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> None:
        data = event(obj)
        change_basket(context, menu_of(self), data.get("pizza"), data.get("quantity", 1), add=False)


class RecordPayment(Action):
    """``recordPayment``, on the charge's onDone: the actor's output into the context."""

    def execute(self, context: Context, obj: dict[str, Any]) -> None:
        context.update(event(obj)["output"])


class SendToKitchen(Action):
    """``sendToKitchen``, entry of ``baking``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> None:
        context.update(kitchen_ticket(context))


class AssignDriver(Action):
    """``assignDriver``, entry of ``delivery``: ``params.drivers``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> None:
        context["driver"] = driver_for(context, list(self.params.get("drivers") or ["Sam"]))


class CloseOrder(Action):
    """``closeOrder``, entry of ``delivered``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> None:
        context["delivered"] = True


class NoteRefundReason(Action):
    """``noteRefundReason``: the event's ``reason`` if it has one, else ``params.reason``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> None:
        context["refund_reason"] = event(obj).get("reason") or self.params.get("reason") or "unknown"


class RecordRefund(Action):
    """``recordRefund``, on the refund's onDone."""

    def execute(self, context: Context, obj: dict[str, Any]) -> None:
        context.update(event(obj)["output"])


# -- actors -----------------------------------------------------------------------------------


class ChargeCard(Action):
    """``chargeCard``, invoked by ``payment``: output ``{payment_id, charged_cents}``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        return charge(context)


class RefundPayment(Action):
    """``refundPayment``, invoked by ``refunding``: output ``{refund_id, refunded_cents}``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        return refund(context)
