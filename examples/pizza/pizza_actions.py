"""Actions of the pizza order machine (examples/pizza/fsm.yaml).

Every action keeps its results in the context, never on ``self``: one action object
serves every order, and the context is what the framework stores between events. Money
is kept in integer cents so totals survive the JSON round trip exactly.

The payment and refund ids are derived from the correlation id rather than drawn at
random: a transition that fails is run again from the last committed context, and a
retried charge must reach the payment provider with the same idempotency key, or the
customer pays twice.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from fsm import Action, Context

DEFAULT_MENU = {"margherita": 850, "pepperoni": 1050, "quattro_formaggi": 1150}


def _stable_id(prefix: str, *parts: str) -> str:
    """An id that is the same every time the same transition is retried."""
    return prefix + hashlib.sha256(":".join(parts).encode()).hexdigest()[:12]


def _menu(action: Action) -> dict[str, int]:
    return dict(action.params.get("menu") or DEFAULT_MENU)


class OpenOrder(Action):
    """Start an order: an empty basket (or the pizzas given with ``--context``), priced.

    Pricing the initial pizzas here, not trusting a total from outside, keeps the total
    a function of the menu in fsm.yaml.
    """

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        menu = _menu(self)
        context.setdefault("customer", "guest")
        context["order_id"] = _stable_id("ord_", context.correlation_id)
        wanted = list(context.get("pizzas", []))
        context["pizzas"] = [p for p in wanted if p in menu]
        context["total_cents"] = sum(menu[p] for p in context["pizzas"])
        context["problems"] = [f"no pizza {p!r} on the menu ({', '.join(sorted(menu))})"
                               for p in wanted if p not in menu]
        return "opened"


class AddPizza(Action):
    """ADD_PIZZA with data ``{"pizza": "margherita", "quantity": 2}``.

    The framework merges event data into the context; the keys are consumed here so the
    stored order holds the basket, not the last request. An unknown pizza is noted in
    ``problems`` instead of raised: raising would be retried and end in ``failed``, and
    a typo from a customer should not kill the order.
    """

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        pizza = context.pop("pizza", None)
        quantity = context.pop("quantity", 1)
        menu = _menu(self)
        if pizza not in menu:
            context["problems"].append(f"no pizza {pizza!r} on the menu ({', '.join(sorted(menu))})")
            return None
        if not isinstance(quantity, int) or not 1 <= quantity <= 20:
            context["problems"].append(f"quantity {quantity!r} must be a whole number from 1 to 20")
            return None
        context["pizzas"].extend([pizza] * quantity)
        context["total_cents"] += menu[pizza] * quantity
        return None


class ChargeCard(Action):
    """Charge the order total; an empty basket goes back to taking the order.

    This is the first step of the saga: once it has succeeded, every way out of the
    kitchen that is not a delivery must refund.
    """

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        if not context["pizzas"]:
            context["problems"].append("CONFIRM on an empty order: add a pizza first")
            return "nothing_to_charge"
        context["payment_id"] = _stable_id("pay_", context.correlation_id, context["order_id"])
        context["charged_cents"] = context["total_cents"]
        return "charged"


class SendToKitchen(Action):
    """Hand the order to the kitchen; the instance then waits for PIZZA_READY or
    KITCHEN_FAILED, and the state's ``timeout`` guards against a kitchen that never
    answers."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context["kitchen_ticket"] = f"K-{context['order_id'][-4:].upper()}"
        context["sent_to_kitchen_at"] = round(time.time(), 3)
        return None


class AssignDriver(Action):
    """Pick a driver (from ``params.drivers``, by order id, so a retry picks the same one)."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        drivers = list(self.params.get("drivers") or ["Sam"])
        index = int(hashlib.sha256(context["order_id"].encode()).hexdigest(), 16) % len(drivers)
        context["driver"] = drivers[index]
        return None


class CloseOrder(Action):
    """Delivered: the order is paid for and out of the kitchen; nothing is owed."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context["delivered"] = True
        return None


class NoteRefundReason(Action):
    """On the transition into ``refunding``: remember why, from the event that led here
    (KITCHEN_FAILED may carry ``{"reason": ...}``; the timeout carries nothing)."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        default = {"timeout": "the kitchen did not answer in time"}.get(str(context.current_event),
                                                                       "the kitchen could not make it")
        context["refund_reason"] = context.pop("reason", None) or default
        return None


class Refund(Action):
    """The saga's compensation: give back exactly what was charged."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context["refund_id"] = _stable_id("re_", context["payment_id"])
        context["refunded_cents"] = context["charged_cents"]
        return "refunded"
