"""The examples, driven through the real ``fsm`` command, one process per command.

Each command is a separate ``python -m fsm`` process, as a user would type them, so
these tests prove what one process leaves in the store is enough for the next: the
instance record, its timers and its history. Every test runs in its own ``tmp_path``,
where the default store ``.fsm/fsm.sqlite3`` lives; nothing is shared between tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PIZZA = EXAMPLES / "pizza" / "fsm.yaml"
PIZZA_XSTATE = EXAMPLES / "pizza" / "xstate.yaml"   # loads order.json, an XState v5 config
ORDER_JSON = EXAMPLES / "pizza" / "order.json"
SIGNUP = EXAMPLES / "signup" / "fsm.yaml"
FLAKY = EXAMPLES / "flaky" / "fsm.yaml"
APPROVAL = EXAMPLES / "approval" / "fsm.yaml"
SHOP = EXAMPLES / "shop" / "fsm.yaml"              # loads order.asl.json, a Step Functions definition
XSTATE_DIR = ROOT / "tests" / "xstate"   # node_modules/xstate: the real XState, for the reference
OK, FAILED, BAD_INPUT = 0, 1, 2
# Many processes per test, and real timer waits: the full suite's, not the fast tier's.
pytestmark = pytest.mark.slow


class Fsm:
    """Runs ``fsm`` in one directory with one machines file, as a shell session would
    after ``export FSM_CONFIG=...``."""

    def __init__(self, cwd: Path, config: Path, pythonpath: Path | None = None, machine: str = ""):
        self.cwd = cwd
        self.machine = machine  # the machine the test drives, when the file has one of interest
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FSM_")}
        self.env["FSM_CONFIG"] = str(config)
        if pythonpath is not None:  # a changed copy of an example needs the original's actions
            paths = [str(pythonpath), self.env.get("PYTHONPATH", "")]
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)

    def __call__(self, *args: str, expect: int = OK) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "fsm", *args], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == expect, (
            f"fsm {' '.join(args)} exited {done.returncode}, expected {expect}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}")
        return done

    def json(self, *args: str, expect: int = OK) -> Any:
        """The command's last stdout line, parsed (earlier lines are progress)."""
        return json.loads(self(*args, "--json", expect=expect).stdout.strip().splitlines()[-1])

    def status(self, cid: str, expect: int = OK) -> dict[str, Any]:
        return self.json("status", cid, expect=expect)

    def start(self, machine: str, context: dict[str, Any] | None = None, cid: str | None = None) -> str:
        args = ["start", "--machine", machine]
        if context is not None:
            args += ["--context", json.dumps(context)]
        if cid is not None:
            args += ["--correlation-id", cid]
        return self(*args).stdout.strip()

    def send(self, cid: str, event: str, data: dict[str, Any] | None = None,
             expect: int = OK) -> dict[str, Any] | None:
        """``fsm send ID EVENT --data ... --wait``: the status right after the event, or
        None when the send was refused at once (no active state takes the event)."""
        args = ["send", cid, event, *(["--data", json.dumps(data)] if data is not None else []), "--wait", "20"]
        done = self(*args, expect=expect)
        if not done.stdout.strip():
            assert "which does not accept" in done.stderr, done.stderr
            return None
        seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return seen


@pytest.fixture
def pizza(tmp_path: Path) -> Fsm:
    return Fsm(tmp_path, PIZZA, machine="pizza")


@pytest.fixture(params=[(PIZZA, "pizza"), (PIZZA_XSTATE, "pizza-xstate")], ids=["yaml", "xstate"])
def order(request: pytest.FixtureRequest, tmp_path: Path) -> Fsm:
    """The pizza order in both its forms, driven by the same commands: fsm.yaml, and the
    XState config order.json (through xstate.yaml)."""
    config, machine = request.param
    return Fsm(tmp_path, config, machine=machine)


def fast_copy(example: Path, tmp_path: Path, old: str, new: str, name: str | None = None) -> Path:
    """A copy of an example with one value changed (a timeout of seconds, not hours)."""
    text = example.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {example}"
    copy = tmp_path / (name or f"fast_{example.parent.name}.yaml")
    copy.write_text(text.replace(old, new), encoding="utf-8")
    return copy


# -- every example ----------------------------------------------------------------------------


@pytest.mark.parametrize("config, machine", [(PIZZA, "pizza"), (PIZZA_XSTATE, "pizza-xstate"),
                                             (SIGNUP, "signup"), (FLAKY, "flaky"), (APPROVAL, "approval"),
                                             (SHOP, "order")],
                         ids=lambda v: v.relative_to(EXAMPLES).as_posix() if isinstance(v, Path) else None)
def test_every_example_validates(tmp_path: Path, config: Path, machine: str) -> None:
    out = Fsm(tmp_path, config)("validate", str(config)).stdout
    assert f"{machine}: " in out and "initial" in out


# -- pizza ------------------------------------------------------------------------------------
#
# Each journey is a list of events (``wait``: let the kitchen's hour pass). The tests send
# them through the CLI to both forms of the order and compare the state value after each
# one with what the real XState gives for order.json, with stub actions, in one node run.

REFUSED = "refused at once"        # no active state takes the event: `fsm send` fails fast
REJECTED = "rejected by a guard"   # taken in, then recorded as rejected: `send --wait` exits 1
JOURNEYS: dict[str, dict[str, Any]] = {
    "delivery": {"context": {"customer": "Ada"}, "events": [
        ("CONFIRM", None, REJECTED),                            # nothing ordered yet
        ("ADD_PIZZA", {"pizza": "margherita", "quantity": 2}),
        ("ADD_PIZZA", {"pizza": "pepperoni"}),
        ("REMOVE_PIZZA", {"pizza": "margherita"}),
        ("DELIVERED", None, REFUSED),
        ("CONFIRM", None),
        ("IN_OVEN", None),
        ("CANCEL", None, REFUSED),                              # in the oven: too late to cancel
        ("PIZZA_READY", None),
        ("DELIVERED", None)]},
    "emptied": {"context": {}, "events": [
        ("ADD_PIZZA", {"pizza": "pepperoni"}),
        ("REMOVE_PIZZA", {"pizza": "pepperoni"}),
        ("CONFIRM", None, REJECTED)]},
    "cancel_before_payment": {"context": {}, "events": [
        ("ADD_PIZZA", {"pizza": "margherita"}),
        ("CANCEL", None)]},
    "cancel_after_payment": {"context": {"pizzas": ["quattro_formaggi"]}, "events": [
        ("CONFIRM", None),
        ("CANCEL", {"reason": "changed my mind"})]},
    "kitchen_failed": {"context": {"pizzas": ["quattro_formaggi"]}, "events": [
        ("CONFIRM", None),
        ("IN_OVEN", None),
        ("KITCHEN_FAILED", {"reason": "oven broke"})]},
    "kitchen_timeout": {"context": {"pizzas": ["margherita"]}, "events": [
        ("CONFIRM", None),
        ("IN_OVEN", None),
        ("wait", 3600)]},
}

# Stub implementations of order.json's names: enough for the basket (the guards read it)
# and the actors' outputs; time is XState's simulated clock. stdin {config, journeys},
# stdout per journey the steps (after start, then after each event).
XSTATE_RUNNER = r"""
const fs = require('fs');
const { createMachine, createActor, assign, fromPromise, SimulatedClock } = require('xstate');
const { config, journeys } = JSON.parse(fs.readFileSync(0, 'utf8'));
const menu = { margherita: 850, pepperoni: 1050, quattro_formaggi: 1150 };
const basket = (add) => assign(({ context, event }) => {
  const pizzas = [...context.pizzas];
  for (let i = 0; event.pizza in menu && i < (event.quantity ?? 1); i++) {
    if (add) pizzas.push(event.pizza);
    else if (pizzas.includes(event.pizza)) pizzas.splice(pizzas.lastIndexOf(event.pizza), 1);
  }
  return { pizzas };
});
const nothing = assign({});
const implementations = {
  actions: { openOrder: nothing, addPizza: basket(true), removePizza: basket(false), sendToKitchen: nothing,
             assignDriver: nothing, closeOrder: nothing, noteRefundReason: nothing,
             recordPayment: assign(({ event }) => event.output), recordRefund: assign(({ event }) => event.output) },
  guards: { hasItems: ({ context }) => context.pizzas.length > 0,
            isEmpty: ({ context }) => context.pizzas.length === 0 },
  actors: { chargeCard: fromPromise(async () => ({ charged: true })),
            refundPayment: fromPromise(async () => ({ refunded: true })) }
};
const settle = async () => { for (let i = 0; i < 10; i++) await new Promise((r) => setTimeout(r, 0)); };
(async () => {
  const out = {};
  for (const [name, journey] of Object.entries(journeys)) {
    const machine = createMachine({ ...config, context: { ...config.context, ...journey.context } }, implementations);
    const clock = new SimulatedClock();
    const actor = createActor(machine, { clock });
    const steps = [];
    const look = () => {
      const s = actor.getSnapshot();
      steps.push({ value: s.value, status: s.status, pizzas: s.context.pizzas,
                   charged: !!s.context.charged, refunded: !!s.context.refunded });
    };
    actor.start(); await settle(); look();
    for (const [type, data] of journey.events) {  // a third item: what lambda-fsm says
      if (type === 'wait') clock.increment(data * 1000); else actor.send({ ...(data || {}), type });
      await settle(); look();
    }
    actor.stop();
    out[name] = steps;
  }
  process.stdout.write(JSON.stringify(out));
})();
"""


@pytest.fixture(scope="module")
def xstate_says() -> dict[str, list[dict[str, Any]]]:
    """Every journey under the real XState (tests/xstate/node_modules), in one node process."""
    sys.path.insert(0, str(XSTATE_DIR))
    try:
        import harness
    finally:
        sys.path.remove(str(XSTATE_DIR))
    try:
        harness.ensure_installed()
    except harness.ReferenceUnavailable as exc:
        pytest.fail(str(exc))
    request = {"config": json.loads(ORDER_JSON.read_text(encoding="utf-8")), "journeys": JOURNEYS}
    done = subprocess.run(["node", "-e", XSTATE_RUNNER], input=json.dumps(request), cwd=XSTATE_DIR,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    return result


def test_pizza_xstate_runs_order_json_as_written(xstate_says: dict[str, list[dict[str, Any]]]) -> None:
    """What the real XState does with order.json: the values the CLI tests below expect."""
    values = {name: [step["value"] for step in steps] for name, steps in xstate_says.items()}
    assert values["delivery"] == [
        {"ordering": "empty"}, {"ordering": "empty"}, {"ordering": "filled"}, {"ordering": "filled"},
        {"ordering": "filled"}, {"ordering": "filled"}, {"baking": "queued"}, {"baking": "in_oven"},
        {"baking": "in_oven"}, "delivery", "delivered"]
    assert values["emptied"] == [{"ordering": "empty"}, {"ordering": "filled"}, {"ordering": "empty"},
                                 {"ordering": "empty"}]
    assert values["cancel_before_payment"][-1] == "cancelled"
    assert [v[-1] for k, v in values.items() if k not in ("delivery", "emptied", "cancel_before_payment")] == \
        ["refunded"] * 3
    assert xstate_says["delivery"][-1]["status"] == "done" and xstate_says["delivery"][-1]["charged"]
    assert not xstate_says["delivery"][-1]["refunded"] and xstate_says["kitchen_timeout"][-1]["refunded"]
    assert xstate_says["delivery"][4]["pizzas"] == ["margherita", "pepperoni"]


def drive(fsm: Fsm, journey: str, xstate_says: dict[str, list[dict[str, Any]]]
          ) -> tuple[str, list[dict[str, Any] | None]]:
    """Start an order and send the journey's events (up to a ``wait``), one ``fsm send``
    each; after each, the value and the basket must be what XState has at that step. An
    event lambda-fsm refuses or rejects must be one XState ignored. Returns the id and
    what each send saw (None: refused at once)."""
    spec = JOURNEYS[journey]
    cid = fsm.start(fsm.machine, spec["context"])
    expected = xstate_says[journey]
    status = fsm.status(cid)
    assert (status["value"], status["context"]["pizzas"]) == (expected[0]["value"], expected[0]["pizzas"])
    seen: list[dict[str, Any] | None] = []
    for (event, data, *outcome), before, xs in zip(spec["events"], expected, expected[1:]):
        if event == "wait":
            break
        if outcome:
            assert (xs["value"], xs["pizzas"]) == (before["value"], before["pizzas"]), f"XState took {event}"
        after = fsm.send(cid, event, data, expect=FAILED if outcome else OK)
        seen.append(after)
        if after is None:
            assert outcome == [REFUSED], f"{event} was refused at once"
            continue
        assert after["event"]["applied"] is (not outcome), after["event"]
        if after["status"] == "running":  # `--wait` shows the step the event took; XState, the settled
            after = {**fsm.status(cid), "event": after["event"]}  # machine (the charge, the refund ran)
            seen[-1] = after
        assert (after["value"], after["context"]["pizzas"]) == (xs["value"], xs["pizzas"]), \
            f"after {event}: {after['value']} {after['context']['pizzas']}, XState {xs['value']} {xs['pizzas']}"
        assert (after["status"] == "done") == (xs["status"] == "done")
    return cid, seen


# The hop after CONFIRM (the charge) and the one after a way into `refunding` (the refund):
# a do action's event in the YAML, the invoked actor's step in the XState version.
HOPS = {"pizza": ("charged", "refunded"), "pizza-xstate": ("xstate.invoke:payment", "xstate.invoke:refunding")}


def test_pizza_run_settles_waiting_for_the_customer(order: Fsm) -> None:
    config = PIZZA if order.machine == "pizza" else PIZZA_XSTATE
    done = order("run", str(config), "--machine", order.machine)
    lines = done.stdout.strip().splitlines()
    assert "ordering.empty" in lines[0]
    assert lines[-1].endswith(": waiting in state ordering.empty after 1 steps"), lines[-1]


def test_pizza_order_through_delivery(order: Fsm, xstate_says: dict[str, list[dict[str, Any]]]) -> None:
    cid, seen = drive(order, "delivery", xstate_says)
    rejected, basket, _, removed, wrong, confirmed, oven, late, ready, _ = seen
    assert rejected is not None and "no guard" in rejected["event"]["error"]
    assert (basket and basket["context"]["total_cents"]) == 1700
    assert removed is not None and removed["context"]["total_cents"] == 850 + 1050
    assert wrong is None and late is None  # refused at once (the next test reads the messages)
    assert confirmed is not None and confirmed["context"]["charged_cents"] == 1900
    assert oven is not None and oven["context"]["kitchen_ticket"].startswith("K-")
    assert ready is not None and ready["context"]["driver"] in ("Sam", "Ana", "Kofi")

    status = order.status(cid)
    context = status["context"]
    assert (status["status"], status["state"], status["value"], status["steps"], status["last_error"]) == \
        ("done", "delivered", "delivered", 9, None)
    assert context["pizzas"] == ["margherita", "pepperoni"]
    assert context["total_cents"] == context["charged_cents"] == 1900
    assert context["payment_id"].startswith("pay_") and "refund_id" not in context
    assert context["customer"] == "Ada" and context["delivered"] is True
    assert "pizza" not in context and "quantity" not in context  # event data was consumed (or never kept)

    charged = HOPS[order.machine][0]
    history = order.json("history", cid)
    assert [(h["step"], h["from"], h["event"], h["to"]) for h in history] == [
        (1, None, None, "ordering.empty"),
        (1, "ordering.empty", "CONFIRM", None),                 # the guard's refusal, recorded
        (2, "ordering.empty", "ADD_PIZZA", "ordering.filled"),
        (3, "ordering.filled", "ADD_PIZZA", "ordering.filled"),
        (4, "ordering.filled", "REMOVE_PIZZA", "ordering.filled"),
        (5, "ordering.filled", "CONFIRM", "payment"),
        (6, "payment", charged, "baking.queued"),
        (7, "baking.queued", "IN_OVEN", "baking.in_oven"),
        (8, "baking.in_oven", "PIZZA_READY", "delivery"),
        (9, "delivery", "DELIVERED", "delivered"),
    ]
    assert [bool(h.get("rejected")) for h in history] == [False, True] + [False] * 8
    assert all({"step", "from", "event", "to", "time", "duration", "retries"} <= set(h) for h in history)
    assert [h["time"] for h in history] == sorted(h["time"] for h in history)
    assert all(h["retries"] == 0 and h["duration"] >= 0 for h in history)


def test_pizza_events_a_state_does_not_take_are_refused_at_once(order: Fsm) -> None:
    cid = order.start(order.machine, {"pizzas": ["margherita"]})
    before = order.status(cid)
    assert before["value"] == {"ordering": "filled"}
    rejected = order("send", cid, "DELIVERED", expect=FAILED)
    assert "'ordering.filled'" in rejected.stderr and \
        "accepts: ADD_PIZZA, CANCEL, CONFIRM, REMOVE_PIZZA" in rejected.stderr
    assert order.status(cid) == before
    order("send", cid, "CONFIRM")
    order("send", cid, "IN_OVEN")
    oven = order.status(cid)
    assert (oven["state"], oven["value"]) == ("baking.in_oven", {"baking": "in_oven"})
    late = order("send", cid, "CANCEL", expect=FAILED)
    assert "'baking.in_oven'" in late.stderr and "accepts: KITCHEN_FAILED, PIZZA_READY" in late.stderr


def test_pizza_confirm_on_an_empty_order_is_refused_by_the_guard(
        order: Fsm, xstate_says: dict[str, list[dict[str, Any]]]) -> None:
    cid = order.start(order.machine, {"pizzas": ["pepperoni"]})
    order.send(cid, "REMOVE_PIZZA", {"pizza": "pepperoni"})
    before = order.status(cid)
    assert (before["value"], before["context"]["pizzas"], before["context"]["total_cents"]) == \
        ({"ordering": "empty"}, [], 0)
    refused = order.send(cid, "CONFIRM", expect=FAILED)
    assert refused is not None and refused["event"]["applied"] is False
    assert "no guard of its transitions in state 'ordering.empty' passed" in refused["event"]["error"]
    after = order.status(cid)
    same = ("state", "value", "status", "steps", "retries", "context")
    assert {k: after[k] for k in same} == {k: before[k] for k in same}
    assert "'CONFIRM' rejected" in after["last_error"]
    last = order.json("history", cid)[-1]
    assert (last["event"], last["from"], last["to"], last["rejected"]) == ("CONFIRM", "ordering.empty", None, True)
    # the same from a basket emptied by hand, compared with XState step by step
    drive(order, "emptied", xstate_says)


def test_pizza_unknown_pizzas_and_removals_are_noted_not_fatal(order: Fsm) -> None:
    cid = order.start(order.machine, {"pizzas": ["margherita", "hawaii"]})
    order.send(cid, "ADD_PIZZA", {"pizza": "calzone"})
    seen = order.send(cid, "REMOVE_PIZZA", {"pizza": "margherita", "quantity": 2})
    assert seen is not None and seen["event"]["applied"] is True
    context = seen["context"]
    assert (seen["status"], seen["value"], context["pizzas"], context["total_cents"]) == \
        ("waiting", {"ordering": "filled"}, ["margherita"], 850)
    assert ["hawaii" in context["problems"][0], "calzone" in context["problems"][1],
            "cannot remove 2 margherita: the order has 1" in context["problems"][2]] == [True] * 3


def test_pizza_cancel_before_payment_just_ends_the_order(
        order: Fsm, xstate_says: dict[str, list[dict[str, Any]]]) -> None:
    cid, _ = drive(order, "cancel_before_payment", xstate_says)
    status = order.status(cid)
    assert (status["status"], status["value"]) == ("done", "cancelled")
    assert "payment_id" not in status["context"] and "refund_id" not in status["context"]


def test_pizza_cancel_after_payment_refunds(order: Fsm, xstate_says: dict[str, list[dict[str, Any]]]) -> None:
    cid, _ = drive(order, "cancel_after_payment", xstate_says)
    status = order.status(cid)
    context = status["context"]
    assert (status["status"], status["value"]) == ("done", "refunded")
    assert context["refunded_cents"] == context["charged_cents"] == 1150
    assert context["refund_id"].startswith("re_") and context["refund_reason"] == "changed my mind"
    assert [(h["from"], h["event"], h["to"]) for h in order.json("history", cid)][-2:] == [
        ("baking.queued", "CANCEL", "refunding"), ("refunding", HOPS[order.machine][1], "refunded")]


def test_pizza_kitchen_failure_refunds(order: Fsm, xstate_says: dict[str, list[dict[str, Any]]]) -> None:
    cid, _ = drive(order, "kitchen_failed", xstate_says)
    status = order.status(cid)
    context = status["context"]
    assert (status["status"], status["state"]) == ("done", "refunded")
    assert context["refunded_cents"] == context["charged_cents"] == 1150
    assert context["refund_id"].startswith("re_") and context["refund_reason"] == "oven broke"


def test_pizza_kitchen_timeout_refunds(order: Fsm, tmp_path: Path,
                                       xstate_says: dict[str, list[dict[str, Any]]]) -> None:
    """The kitchen's hour, made 0.3 s in a copy of the example (the YAML's `after: 3600`,
    the JSON's `"3600000"` milliseconds); the actions stay in the example's folder."""
    if order.machine == "pizza":
        config = fast_copy(PIZZA, tmp_path, "after: 3600", "after: 0.3")
    else:
        fast_copy(ORDER_JSON, tmp_path, '"3600000"', '"300"', name="order.json")
        config = fast_copy(PIZZA_XSTATE, tmp_path, "xstate: order.json", "xstate: order.json", name="xstate.yaml")
    fsm = Fsm(tmp_path, config, pythonpath=PIZZA.parent, machine=order.machine)
    cid = fsm.start(fsm.machine, JOURNEYS["kitchen_timeout"]["context"])
    fsm("send", cid, "CONFIRM")
    time.sleep(0.4)
    assert "1 timers released" in fsm("worker", "--idle-exit", "0.2").stdout
    status = fsm.status(cid)
    assert (status["status"], status["value"]) == ("done", xstate_says["kitchen_timeout"][-1]["value"])
    assert status["context"]["refund_reason"] == "the kitchen did not answer in time"
    assert [h["event"] for h in fsm.json("history", cid)][-2:] == ["xstate.after.300.baking", HOPS[fsm.machine][1]]


def test_errors_and_exit_codes(pizza: Fsm) -> None:
    missing = pizza("send", "no-such-order", "CONFIRM", expect=FAILED)
    assert "no instance 'no-such-order'" in missing.stderr
    pizza("status", "no-such-order", expect=FAILED)
    bad = pizza("send", "no-such-order", "CONFIRM", "--data", "{not json", expect=BAD_INPUT)
    assert "--data is not valid JSON" in bad.stderr
    pizza("start", "--machine", "pizza", "--context", "[1, 2]", expect=BAD_INPUT)
    pizza("start", "--machine", "pizza", "--correlation-id", "no spaces allowed", expect=BAD_INPUT)
    pizza("frobnicate", expect=BAD_INPUT)


def test_start_prints_only_the_id_and_is_idempotent(pizza: Fsm) -> None:
    first = pizza("start", "--machine", "pizza", "--correlation-id", "order-42").stdout
    assert first == "order-42\n"
    pizza("send", "order-42", "ADD_PIZZA", "--data", '{"pizza": "pepperoni"}')
    again = pizza("start", "--machine", "pizza", "--correlation-id", "order-42").stdout
    assert again == "order-42\n"
    status = pizza.status("order-42")
    assert (status["steps"], status["context"]["pizzas"]) == (2, ["pepperoni"])

    generated = pizza("start", "--machine", "pizza").stdout
    assert len(generated.splitlines()) == 1 and pizza.status(generated.strip())["status"] == "waiting"


def test_run_json_prints_the_status_last(pizza: Fsm) -> None:
    status = pizza.json("run", str(PIZZA), "--machine", "pizza", "--context", '{"customer": "Lin"}')
    assert {"correlation_id", "status", "state", "value", "steps", "retries", "context", "last_error"} <= set(status)
    assert (status["status"], status["state"], status["value"], status["steps"], status["retries"]) == \
        ("waiting", "ordering.empty", {"ordering": "empty"}, 1, 0)
    assert status["context"]["customer"] == "Lin" and status["last_error"] is None


def test_cancel_shows_the_reason(pizza: Fsm) -> None:
    cid = pizza.start("pizza")
    pizza("cancel", cid, "--reason", "customer hung up")
    status = pizza.status(cid)
    assert (status["status"], status["state"]) == ("cancelled", "ordering.empty")
    assert "customer hung up" in status["last_error"]
    assert pizza.json("history", cid)[-1]["cancelled"] == "customer hung up"
    assert "is cancelled" in pizza("send", cid, "CONFIRM", expect=FAILED).stderr
    pizza("cancel", cid, expect=FAILED)


def test_memory_store_lives_for_one_process(pizza: Fsm) -> None:
    status = pizza.json("run", str(PIZZA), "--machine", "pizza", "--store", "memory://")
    assert (status["status"], status["state"]) == ("waiting", "ordering.empty")
    pizza("status", status["correlation_id"], "--store", "memory://", expect=FAILED)
    # Retries wait in the in-memory timer store, and the runtime sleeps through them.
    flaky = pizza.json("run", str(FLAKY), "--machine", "flaky", "--store", "memory://",
                       "--correlation-id", "flaky-1", "--context", '{"seed": 1}')
    assert (flaky["status"], flaky["state"]) == ("done", "exported")


# -- flaky ------------------------------------------------------------------------------------


def test_flaky_completes_through_retries(tmp_path: Path) -> None:
    fsm = Fsm(tmp_path, FLAKY)
    # A fixed seed and id replay the same failures every time (see flaky_actions.py).
    status = fsm.json("run", str(FLAKY), "--machine", "flaky", "--correlation-id", "flaky-1",
                      "--context", '{"seed": 1}')
    assert (status["status"], status["state"], status["steps"]) == ("done", "exported", 5)
    assert status["context"]["total_cents"] == 4375
    history = fsm.json("history", "flaky-1")
    failed = [h for h in history if h.get("error")]
    assert failed and all("ConnectionError" in h["error"] and h["to"] is None for h in failed)
    committed = [h for h in history if not h.get("error")]
    assert [h["step"] for h in committed] == [1, 2, 3, 4, 5]
    assert sum(h["retries"] for h in committed) == len(failed) == \
        sum(status["context"]["retries_by_step"].values())


def test_flaky_receipt_gives_up_through_max_retry_event(tmp_path: Path) -> None:
    fsm = Fsm(tmp_path, FLAKY)
    status = fsm.json("run", str(FLAKY), "--machine", "flaky", "--correlation-id", "flaky-3",
                      "--context", '{"receipt_service_down": true, "seed": 3}')
    assert (status["status"], status["state"]) == ("done", "exported_without_receipt")
    assert "receipt_sent" not in status["context"]
    last = fsm.json("history", status["correlation_id"])[-2:]
    assert (last[0]["to"], last[0]["retries"]) == ("sending_receipt", 20)
    assert last[1]["event"] == "receipt_gave_up"


# -- signup -----------------------------------------------------------------------------------


def mailed_token(fsm: Fsm, cid: str) -> str:
    mail = (fsm.cwd / ".fsm" / "outbox" / f"{cid}.txt").read_text(encoding="utf-8")
    return next(line.split(": ", 1)[1] for line in mail.splitlines() if line.startswith("token: "))


def verify(fsm: Fsm, cid: str, token: str) -> None:
    fsm("send", cid, "VERIFY", "--data", json.dumps({"token": token}))


def test_signup_wrong_token_waits_then_right_token_verifies(tmp_path: Path) -> None:
    fsm = Fsm(tmp_path, SIGNUP)
    cid = fsm.start("signup", {"email": "Ada@Example.com"})
    first = mailed_token(fsm, cid)
    verify(fsm, cid, "not-the-token")
    status = fsm.status(cid)
    assert (status["status"], status["state"], status["context"]["failed_attempts"]) == \
        ("waiting", "awaiting_verification", 1)
    assert "token" not in status["context"]  # only its hash is kept

    fsm("send", cid, "RESEND_LINK")
    second = mailed_token(fsm, cid)
    assert second != first
    verify(fsm, cid, first)  # the old link no longer works
    assert fsm.status(cid)["context"]["failed_attempts"] == 2
    verify(fsm, cid, second)
    status = fsm.status(cid)
    assert (status["status"], status["state"]) == ("done", "verified")
    assert status["context"]["verified"] is True and status["context"]["email"] == "ada@example.com"
    assert "token_sha256" not in status["context"]


def test_signup_locks_after_three_wrong_tokens(tmp_path: Path) -> None:
    fsm = Fsm(tmp_path, SIGNUP)
    cid = fsm.start("signup", {"email": "eve@example.com"})
    for guess in ("a", "b", "c"):
        verify(fsm, cid, guess)
    status = fsm.status(cid)
    assert (status["status"], status["state"], status["context"]["failed_attempts"]) == ("done", "locked", 3)
    fsm("send", cid, "VERIFY", expect=FAILED)


def test_signup_link_expires(tmp_path: Path) -> None:
    config = fast_copy(SIGNUP, tmp_path, "&link_lifetime 86400", "&link_lifetime 0.5")
    fsm = Fsm(tmp_path, config, pythonpath=SIGNUP.parent)
    idle = fsm.start("signup", {"email": "idle@example.com"})
    late = fsm.start("signup", {"email": "late@example.com"})
    time.sleep(0.7)
    # The right token, too late: the overdue timeout happened before the send, so the
    # embedded runtime fires it first and the send is refused. Any command that drives
    # the embedded runtime also fires the idle instance's due timeout: no `fsm worker`.
    refused = fsm("send", late, "VERIFY", "--data", json.dumps({"token": mailed_token(fsm, late)}), expect=1)
    assert "done" in refused.stderr
    assert (fsm.status(late)["state"], fsm.status(idle)["state"]) == ("expired", "expired")
    assert fsm.json("history", idle)[-1]["event"] == "timeout"


def test_signup_rejects_a_bad_address(tmp_path: Path) -> None:
    status = Fsm(tmp_path, SIGNUP).json("run", str(SIGNUP), "--machine", "signup",
                                        "--context", '{"email": "not-an-address"}')
    assert (status["status"], status["state"]) == ("done", "rejected")


# -- approval ---------------------------------------------------------------------------------


def test_approval_escalate_then_approve_books_locally(tmp_path: Path) -> None:
    fsm = Fsm(tmp_path, APPROVAL)
    cid = fsm.start("approval", {"employee": "ada", "amount_cents": 12000, "purpose": "train"})
    fsm("send", cid, "ESCALATE", "--data", '{"by": "maria"}')
    assert fsm.status(cid)["state"] == "awaiting_director"
    fsm("send", cid, "APPROVE", "--data", '{"by": "dirk"}')
    status = fsm.status(cid)
    assert (status["status"], status["state"]) == ("done", "paid")
    assert [(d["verdict"], d["by"]) for d in status["context"]["decisions"]] == \
        [("escalated", "maria"), ("approved", "dirk")]
    assert status["context"]["payout"]["cents"] == 12000
    history = {h["to"]: h for h in fsm.json("history", cid)}
    # `booked` is local: booking and scheduling the payout ran in one invocation.
    assert history["booking"]["time"] == history["scheduling_payout"]["time"]


def test_approval_reject(tmp_path: Path) -> None:
    fsm = Fsm(tmp_path, APPROVAL)
    cid = fsm.start("approval", {"employee": "bo", "amount_cents": 900})
    fsm("send", cid, "REJECT", "--data", '{"by": "maria", "reason": "personal"}')
    status = fsm.status(cid)
    assert (status["status"], status["state"]) == ("done", "rejected")
    assert status["context"]["decisions"][-1]["reason"] == "personal"


# -- retry of a failed instance -----------------------------------------------------------------

FRAGILE_YAML = """\
machines:
  - name: fragile
    max_retries: 0
    states:
      - name: working
        initial: true
        do_action: e2e_fragile_actions.NeedsFlag
        transitions:
          - {event: worked, target: finished}
      - name: finished
        final: true
"""

FRAGILE_ACTIONS = '''\
from pathlib import Path

from fsm import Action


class NeedsFlag(Action):
    """Fails until the file `flag` exists: a fault an operator can fix."""

    def execute(self, context, obj):
        if not Path("flag").exists():
            raise RuntimeError("flag file missing")
        context["worked"] = True
        return "worked"
'''


def test_retry_resumes_a_failed_instance(tmp_path: Path) -> None:
    (tmp_path / "fsm.yaml").write_text(FRAGILE_YAML, encoding="utf-8")
    (tmp_path / "e2e_fragile_actions.py").write_text(FRAGILE_ACTIONS, encoding="utf-8")
    fsm = Fsm(tmp_path, tmp_path / "fsm.yaml")
    failed = fsm.json("run", "fsm.yaml", "--machine", "fragile", "--correlation-id", "job-1", expect=FAILED)
    assert failed["status"] == "failed" and "flag file missing" in failed["last_error"]
    assert fsm.status("job-1", expect=OK)["status"] == "failed"  # the query worked: exit 0
    fsm("send", "job-1", "worked", expect=FAILED)

    (tmp_path / "flag").touch()
    fsm("retry", "job-1")
    status = fsm.status("job-1")
    assert (status["status"], status["state"], status["context"], status["last_error"]) == \
        ("done", "finished", {"worked": True}, None)
    assert "only a failed instance" in fsm("retry", "job-1", expect=FAILED).stderr


# -- shop (ASL) -------------------------------------------------------------------------------


def test_shop_runs_its_step_functions_definition_to_an_output_or_an_error(tmp_path: Path) -> None:
    fsm = Fsm(tmp_path, SHOP)
    lines = [{"sku": "tea", "qty": 2}, {"sku": "mug", "qty": 1}]
    paid = fsm.json("run", str(SHOP), "--input", json.dumps({"order": "A-1", "card": "4242", "lines": lines}))
    assert paid["status"] == "done" and paid["output"] == {
        "order": "A-1", "total": 18.0, "charge": "ch-A-1", "reserved": 3, "summary": "order A-1 paid 18.0 with ch-A-1"}
    children = fsm("status", paid["correlation_id"], "--children").stdout
    assert children.count(" done") >= 4 and "order/PriceLines" in children and "order/PayAndReserve/1" in children
    declined = fsm.json("run", str(SHOP), "--input", json.dumps({"order": "A-2", "card": "4000", "lines": lines}), expect=FAILED)
    assert (declined["status"], declined["error"], declined["cause"]) == (
        "failed", "OrderDeclined", "card ending 4000 was declined")
    unknown = fsm.json("run", str(SHOP), "--input",
                       json.dumps({"order": "A-3", "card": "4242", "lines": [{"sku": "x", "qty": 1}]}), expect=FAILED)
    assert (unknown["error"], unknown["cause"]) == ("UnknownSku", "no price for 'x'")
