"""Actions and guards of the pizza order statechart (examples/pizza/fsm.yaml).

Every action keeps its results in the context, never on ``self``: one action object
serves every order, and the context is what the framework stores between events. Money
is kept in integer cents so totals survive the JSON round trip exactly.

In a YAML machine the framework merges an event's data into the context before the
actions run; the actions that read it (AddPizza, RemovePizza, NoteRefundReason) take
their keys out again, so the stored order holds the basket, not the last request. (The
XState version of this workflow, xstate_actions.py, reads ``obj["event_data"]`` instead:
there the context changes only through actions.)

The payment and refund ids are derived from the correlation id rather than drawn at
random: a transition that fails is run again from the last committed context, and a
retried charge must reach the payment provider with the same idempotency key, or the
customer pays twice.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from fsm import Action, Context, Guard

DEFAULT_MENU = {"margherita": 850, "pepperoni": 1050, "quattro_formaggi": 1150}
MAX_QUANTITY = 20


def stable_id(prefix: str, *parts: str) -> str:
    """An id that is the same every time the same transition is retried."""
    return prefix + hashlib.sha256(":".join(parts).encode()).hexdigest()[:12]


def menu_of(action: Action) -> dict[str, int]:
    return dict(action.params.get("menu") or DEFAULT_MENU)


def open_order(context: Context, menu: dict[str, int]) -> None:
    """An empty basket (or the pizzas given with ``--context``), priced from the menu:
    a total from outside is never trusted."""
    context.setdefault("customer", "guest")
    context["order_id"] = stable_id("ord_", context.correlation_id)
    wanted = list(context.get("pizzas") or [])
    context["pizzas"] = [p for p in wanted if p in menu]
    context["total_cents"] = sum(menu[p] for p in context["pizzas"])
    context["problems"] = [unknown(p, menu) for p in wanted if p not in menu]


def unknown(pizza: Any, menu: dict[str, int]) -> str:
    return f"no pizza {pizza!r} on the menu ({', '.join(sorted(menu))})"


def change_basket(context: Context, menu: dict[str, int], pizza: Any, quantity: Any, add: bool) -> None:
    """Add or remove ``quantity`` of ``pizza``. A mistake is noted in ``problems`` instead
    of raised: raising would be retried and end the order, and a typo from a customer
    should not kill it."""
    if pizza not in menu:
        context["problems"].append(unknown(pizza, menu))
        return
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= MAX_QUANTITY:
        context["problems"].append(f"quantity {quantity!r} must be a whole number from 1 to {MAX_QUANTITY}")
        return
    if add:
        context["pizzas"].extend([pizza] * quantity)
        context["total_cents"] += menu[pizza] * quantity
        return
    held = context["pizzas"].count(pizza)
    if held < quantity:
        context["problems"].append(f"cannot remove {quantity} {pizza}: the order has {held}")
        return
    kept = list(reversed(context["pizzas"]))  # the last ones added go first
    for _ in range(quantity):
        kept.remove(pizza)
    context["pizzas"] = kept[::-1]
    context["total_cents"] -= menu[pizza] * quantity


def charge(context: Context) -> dict[str, Any]:
    """What the payment provider answers for charging the order's total (a stub)."""
    return {"payment_id": stable_id("pay_", context.correlation_id, context["order_id"]),
            "charged_cents": context["total_cents"]}


def refund(context: Context) -> dict[str, Any]:
    """What the payment provider answers for refunding what was charged (a stub)."""
    return {"refund_id": stable_id("re_", context["payment_id"]), "refunded_cents": context["charged_cents"]}


def kitchen_ticket(context: Context) -> dict[str, Any]:
    return {"kitchen_ticket": f"K-{context['order_id'][-4:].upper()}", "sent_to_kitchen_at": round(time.time(), 3)}


def driver_for(context: Context, drivers: list[str]) -> str:
    """A driver picked by order id, so that a retry picks the same one."""
    return drivers[int(hashlib.sha256(context["order_id"].encode()).hexdigest(), 16) % len(drivers)]


# -- ordering ---------------------------------------------------------------------------------


class OpenOrder(Action):
    """Entry action of ``ordering``: the basket, priced. ``params.menu``: prices in cents."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        open_order(context, menu_of(self))
        return None


class AddPizza(Action):
    """ADD_PIZZA with data ``{"pizza": "margherita", "quantity": 2}`` (quantity 1 if not given)."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        change_basket(context, menu_of(self), context.pop("pizza", None), context.pop("quantity", 1), add=True)
        return None


class RemovePizza(Action):
    """REMOVE_PIZZA with data ``{"pizza": "margherita", "quantity": 1}``: takes that many
    of that pizza out of the basket; asking for more than it holds changes nothing and is
    noted in ``problems``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        change_basket(context, menu_of(self), context.pop("pizza", None), context.pop("quantity", 1), add=False)
        return None


class HasItems(Guard):
    """The basket holds at least one pizza."""

    def check(self, context: Context, event_data: dict[str, Any]) -> bool:
        return bool(context.get("pizzas"))


class IsEmpty(Guard):
    """The basket holds no pizza."""

    def check(self, context: Context, event_data: dict[str, Any]) -> bool:
        return not context.get("pizzas")


# -- payment, the kitchen, delivery -------------------------------------------------------------


class ChargeCard(Action):
    """Do action of ``payment``: charge the order total. The guard on CONFIRM has made
    sure there is something to charge.

    This is the first step of the saga: once it has succeeded, every way out of the
    kitchen that is not a delivery must refund.
    """

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context.update(charge(context))
        return "charged"


class SendToKitchen(Action):
    """Entry action of ``baking``: hand the order to the kitchen, which answers with
    IN_OVEN, then PIZZA_READY (or KITCHEN_FAILED); the `after:` transition guards against
    a kitchen that never answers."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context.update(kitchen_ticket(context))
        return None


class AssignDriver(Action):
    """Pick a driver from ``params.drivers``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context["driver"] = driver_for(context, list(self.params.get("drivers") or ["Sam"]))
        return None


class CloseOrder(Action):
    """Delivered: the order is paid for and out of the kitchen; nothing is owed."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context["delivered"] = True
        return None


# -- the compensation ---------------------------------------------------------------------------


class NoteRefundReason(Action):
    """On a transition into ``refunding``: remember why. The event's ``{"reason": ...}``
    if it carries one (KITCHEN_FAILED, CANCEL), else ``params.reason``."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context["refund_reason"] = context.pop("reason", None) or self.params.get("reason") or "unknown"
        return None


class Refund(Action):
    """Do action of ``refunding``, the saga's compensation: give back exactly what was charged."""

    def execute(self, context: Context, obj: dict[str, Any]) -> str | None:
        context.update(refund(context))
        return "refunded"
