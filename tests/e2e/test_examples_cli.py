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
SIGNUP = EXAMPLES / "signup" / "fsm.yaml"
FLAKY = EXAMPLES / "flaky" / "fsm.yaml"
APPROVAL = EXAMPLES / "approval" / "fsm.yaml"
OK, FAILED, BAD_INPUT = 0, 1, 2
# Many processes per test, and real timer waits: the full suite's, not the fast tier's.
pytestmark = pytest.mark.slow


class Fsm:
    """Runs ``fsm`` in one directory with one machines file, as a shell session would
    after ``export FSM_CONFIG=...``."""

    def __init__(self, cwd: Path, config: Path, pythonpath: Path | None = None):
        self.cwd = cwd
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


@pytest.fixture
def pizza(tmp_path: Path) -> Fsm:
    return Fsm(tmp_path, PIZZA)


def fast_copy(example: Path, tmp_path: Path, old: str, new: str) -> Path:
    """A copy of an example with one value changed (a timeout of seconds, not hours)."""
    text = example.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {example}"
    copy = tmp_path / f"fast_{example.parent.name}.yaml"
    copy.write_text(text.replace(old, new), encoding="utf-8")
    return copy


# -- every example ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", [PIZZA, SIGNUP, FLAKY, APPROVAL], ids=lambda p: p.parent.name)
def test_every_example_validates(tmp_path: Path, config: Path) -> None:
    out = Fsm(tmp_path, config)("validate", str(config)).stdout
    assert f"{config.parent.name}: " in out and "initial" in out


# -- pizza ------------------------------------------------------------------------------------


def test_pizza_run_settles_waiting_for_the_customer(pizza: Fsm) -> None:
    done = pizza("run", str(PIZZA), "--machine", "pizza")
    lines = done.stdout.strip().splitlines()
    assert "received" in lines[0] and "taking_order" in lines[1]
    assert lines[-1].endswith(": waiting in state taking_order after 2 steps"), lines[-1]


def test_pizza_order_through_delivery(pizza: Fsm) -> None:
    cid = pizza.start("pizza", {"customer": "Ada"})
    pizza("send", cid, "ADD_PIZZA", "--data", '{"pizza": "margherita", "quantity": 2}')
    pizza("send", cid, "ADD_PIZZA", "--data", '{"pizza": "pepperoni"}')
    before = pizza.status(cid)
    assert (before["state"], before["steps"], before["context"]["total_cents"]) == ("taking_order", 4, 2750)

    rejected = pizza("send", cid, "DELIVERED", expect=FAILED)
    assert "'taking_order'" in rejected.stderr and "ADD_PIZZA, CANCEL, CONFIRM" in rejected.stderr
    assert pizza.status(cid) == before

    for event in ("CONFIRM", "PIZZA_READY", "DELIVERED"):
        pizza("send", cid, event)
    status = pizza.status(cid)
    context = status["context"]
    assert (status["status"], status["state"], status["steps"], status["last_error"]) == \
        ("done", "delivered", 8, None)
    assert context["pizzas"] == ["margherita", "margherita", "pepperoni"]
    assert context["total_cents"] == context["charged_cents"] == 2750
    assert context["payment_id"].startswith("pay_") and "refund_id" not in context
    assert context["customer"] == "Ada" and context["delivered"] is True
    assert "pizza" not in context and "quantity" not in context  # event data was consumed

    history = pizza.json("history", cid)
    assert [(h["step"], h["from"], h["event"], h["to"]) for h in history] == [
        (1, None, None, "received"),
        (2, "received", "opened", "taking_order"),
        (3, "taking_order", "ADD_PIZZA", "taking_order"),
        (4, "taking_order", "ADD_PIZZA", "taking_order"),
        (5, "taking_order", "CONFIRM", "charging"),
        (6, "charging", "charged", "in_kitchen"),
        (7, "in_kitchen", "PIZZA_READY", "out_for_delivery"),
        (8, "out_for_delivery", "DELIVERED", "delivered"),
    ]
    assert all({"step", "from", "event", "to", "time", "duration", "retries"} <= set(h) for h in history)
    assert [h["time"] for h in history] == sorted(h["time"] for h in history)
    assert all(h["retries"] == 0 and h["duration"] >= 0 for h in history)


def test_pizza_unknown_menu_item_is_noted_not_fatal(pizza: Fsm) -> None:
    cid = pizza.start("pizza")
    pizza("send", cid, "ADD_PIZZA", "--data", '{"pizza": "hawaii"}')
    status = pizza.status(cid)
    assert (status["status"], status["state"], status["context"]["pizzas"]) == ("waiting", "taking_order", [])
    assert "hawaii" in status["context"]["problems"][0]


def test_pizza_kitchen_failure_refunds(pizza: Fsm) -> None:
    cid = pizza.start("pizza", {"pizzas": ["quattro_formaggi"]})
    assert "in state in_kitchen" in pizza("send", cid, "CONFIRM").stdout
    pizza("send", cid, "KITCHEN_FAILED", "--data", '{"reason": "oven broke"}')
    status = pizza.status(cid)
    context = status["context"]
    assert (status["status"], status["state"]) == ("done", "refunded")
    assert context["refunded_cents"] == context["charged_cents"] == 1150
    assert context["refund_id"].startswith("re_") and context["refund_reason"] == "oven broke"


def test_pizza_kitchen_timeout_refunds(tmp_path: Path) -> None:
    config = fast_copy(PIZZA, tmp_path, "timeout: 3600", "timeout: 0.3")
    fsm = Fsm(tmp_path, config, pythonpath=PIZZA.parent)
    cid = fsm.start("pizza", {"pizzas": ["margherita"]})
    fsm("send", cid, "CONFIRM")
    time.sleep(0.4)
    assert "1 timers released" in fsm("worker", "--idle-exit", "0.2").stdout
    status = fsm.status(cid)
    assert (status["status"], status["state"]) == ("done", "refunded")
    assert status["context"]["refund_reason"] == "the kitchen did not answer in time"
    assert [h["event"] for h in fsm.json("history", cid)][-2:] == ["timeout", "refunded"]


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
    assert (status["steps"], status["context"]["pizzas"]) == (3, ["pepperoni"])

    generated = pizza("start", "--machine", "pizza").stdout
    assert len(generated.splitlines()) == 1 and pizza.status(generated.strip())["status"] == "waiting"


def test_run_json_prints_the_status_last(pizza: Fsm) -> None:
    status = pizza.json("run", str(PIZZA), "--machine", "pizza", "--context", '{"customer": "Lin"}')
    assert {"correlation_id", "status", "state", "steps", "retries", "context", "last_error"} <= set(status)
    assert (status["status"], status["state"], status["steps"], status["retries"]) == \
        ("waiting", "taking_order", 2, 0)
    assert status["context"]["customer"] == "Lin" and status["last_error"] is None


def test_cancel_shows_the_reason(pizza: Fsm) -> None:
    cid = pizza.start("pizza")
    pizza("cancel", cid, "--reason", "customer hung up")
    status = pizza.status(cid)
    assert (status["status"], status["state"]) == ("cancelled", "taking_order")
    assert "customer hung up" in status["last_error"]
    assert pizza.json("history", cid)[-1]["cancelled"] == "customer hung up"
    assert "is cancelled" in pizza("send", cid, "CONFIRM", expect=FAILED).stderr
    pizza("cancel", cid, expect=FAILED)


def test_memory_store_lives_for_one_process(pizza: Fsm) -> None:
    status = pizza.json("run", str(PIZZA), "--machine", "pizza", "--store", "memory://")
    assert (status["status"], status["state"]) == ("waiting", "taking_order")
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
