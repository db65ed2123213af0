"""The order's tasks. An ASL Task's action gets its input as ``obj["input"]`` and returns
its result (any JSON); ``fsm.Failed(error, cause)`` is an ASL error a Catch can take."""

from __future__ import annotations

from typing import Any

from fsm import Action, Context, Failed

PRICES = {"tea": 4.5, "mug": 9.0, "pot": 25.0}
DECLINED = "4000"   # a test card that is always declined


class Price(Action):
    def execute(self, context: Context, obj: dict[str, Any]) -> Any:
        line = obj["input"]
        if line["sku"] not in PRICES:
            raise Failed("UnknownSku", f"no price for {line['sku']!r}")
        return {**line, "amount": PRICES[line["sku"]] * line["qty"]}


class Total(Action):
    def execute(self, context: Context, obj: dict[str, Any]) -> Any:
        return round(sum(line["amount"] for line in obj["input"]["lines"]), 2)


class Charge(Action):
    def execute(self, context: Context, obj: dict[str, Any]) -> Any:
        given = obj["input"]
        if given["card"] == DECLINED:
            raise Failed("CardDeclined", f"card ending {given['card'][-4:]} was declined")
        return {"charge_id": f"ch-{given['order']}", "amount": given["amount"]}


class Reserve(Action):
    def execute(self, context: Context, obj: dict[str, Any]) -> Any:
        return {"reserved": sum(line["qty"] for line in obj["input"]["lines"])}
