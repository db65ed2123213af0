"""The examples (pizza, signup, approval) deployed on AWS: a standard SQS queue and a
DynamoDB table, served by moto_server.

Each test is an operator's session: a settings file naming the queue and the table (the
table is the store and, with no ``retry:`` table, the timer store too), ``fsm
create-resources``, then ``fsm start`` / ``send`` / ``cancel`` / ``status --json`` /
``history --json``, each a process of its own that sees only a shell's environment
(``FSM_CONFIG``, ``FSM_SETTINGS``, ``AWS_ENDPOINT_URL``, credentials). Nothing runs until a
worker reads the queue: ``fsm worker --source QUEUE --idle-exit N`` in a subprocess once
per test, and otherwise ``run_worker`` in this process, built from the same files and
stopped as soon as the queue holds nothing (visible, in flight or delayed), which costs
no idle wait.

Timers. A standard queue holds a delay of up to 900 s itself (``DelaySeconds``), so only
a longer timeout goes to the DynamoDB timer table. The timeouts here are all longer (the
examples' own, and the signup copy's 901 s link lifetime), so every timer is an item of
the table; a test makes one due by moving its ``due`` into the past, as if the time had
passed, and a worker releases it onto the queue.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from config.loader import load_file
from config.settings import load_settings
from fsm.app import App
from fsm.app.wiring import build
from fsm.app.worker import run_worker
from fsm.client import Client

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
REGION = "us-east-1"
ACCOUNT = "123456789012"
OK, FAILED = 0, 1
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
WORKER_LINE = re.compile(r"worker: (\d+) records \((\d+) failed\), (\d+) timers released")
HISTORY_KEYS = {"step", "from", "event", "to", "time", "duration", "retries"}
# Above the 900 s a standard queue can delay a message: the timer goes to the table.
LINK_LIFETIME = 901


def short_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Site:
    """One example deployed on moto_server: its files, its queue and table, a shell to run
    ``fsm`` in, and the same application in this process (a worker and cheap reads)."""

    def __init__(self, folder: Path, example: str, config: Path, moto_url: str):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.example_dir = EXAMPLES / example
        self.config = config
        self.moto_url = moto_url
        self.queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{short_id(example)}"
        self.dead_letter = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{short_id(example + '-dead')}"
        self.table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{short_id(example)}"
        self.settings_file = self.folder / "settings.yaml"
        self.settings_file.write_text(
            f"stream: [{self.queue}]\nstore: [{self.table}]\ndead_letter: [{self.dead_letter}]\n",
            encoding="utf-8")
        self.sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_url)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_url)
        self._app: App | None = None

    # -- the shell ------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FSM_", "AWS_"))}
        paths = [str(self.example_dir), str(ROOT), env.get("PYTHONPATH", "")]
        env.update(FSM_CONFIG=str(self.config), FSM_SETTINGS=str(self.settings_file),
                   AWS_ENDPOINT_URL=self.moto_url, AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
                   AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
                   PYTHONPATH=os.pathsep.join(p for p in paths if p))
        return env

    def launch(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "fsm", *args], cwd=self.folder, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def fsm(self, *args: str, expect: int = OK) -> subprocess.CompletedProcess[str]:
        return self.together([list(args)], expect=expect)[0]

    def together(self, commands: list[list[str]], expect: int | list[int] = OK
                 ) -> list[subprocess.CompletedProcess[str]]:
        """Run the commands at the same moment (one process each) and wait for all."""
        expected = expect if isinstance(expect, list) else [expect] * len(commands)
        running = [(args, self.launch(*args)) for args in commands]
        done = []
        for (args, process), code in zip(running, expected):
            stdout, stderr = process.communicate(timeout=60)
            assert process.returncode == code, (
                f"fsm {' '.join(args)} exited {process.returncode}, expected {code}\n"
                f"stdout: {stdout}\nstderr: {stderr[-3000:]}")
            done.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
        return done

    def start(self, machine: str, context: dict[str, Any]) -> str:
        cid = self.fsm("start", "--machine", machine, "--context", json.dumps(context)).stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", cid), cid
        return cid

    def send(self, cid: str, event: str, data: dict[str, Any] | None = None,
             expect: int = OK) -> subprocess.CompletedProcess[str]:
        return self.fsm("send", cid, event, *(["--data", json.dumps(data)] if data is not None else []),
                        expect=expect)

    def send_args(self, cid: str, event: str, data: dict[str, Any]) -> list[str]:
        return ["send", cid, event, "--data", json.dumps(data)]

    def views(self, cid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``fsm status --json`` and ``fsm history --json``, run side by side."""
        status, history = self.together([["status", cid, "--json"], ["history", cid, "--json"]])
        view: dict[str, Any] = json.loads(status.stdout)
        assert view["correlation_id"] == cid
        return view, json.loads(history.stdout)

    def start_many(self, machine: str, *contexts: dict[str, Any]) -> list[str]:
        """Several ``fsm start`` at once (each prints only its id)."""
        started = self.together([["start", "--machine", machine, "--context", json.dumps(c)] for c in contexts])
        cids = [done.stdout.strip() for done in started]
        assert all(re.fullmatch(r"[0-9a-f]{32}", cid) for cid in cids) and len(set(cids)) == len(cids), cids
        return cids

    def worker_cli(self, idle_exit: float = 1.5) -> tuple[int, int, int]:
        """``fsm worker`` as an operator runs it: (records, failed, timers released)."""
        out = self.fsm("worker", "--source", self.queue, "--idle-exit", str(idle_exit)).stdout
        found = WORKER_LINE.search(out)
        assert found, out
        records, failed, timers = (int(n) for n in found.groups())
        return records, failed, timers

    # -- this process ---------------------------------------------------------------------

    def app(self) -> App:
        """The same files in this process (the fixture points boto3 at moto_server and puts
        the example's folder on ``sys.path``)."""
        if self._app is None:
            definitions = load_file(str(self.config))
            settings = load_settings(definitions.settings, str(self.settings_file), environ={})
            self._app = App(definitions, settings, build(definitions.machines, settings))
        return self._app

    def peek(self, cid: str) -> dict[str, Any]:
        """The status as ``fsm status --json`` shows it, read in this process (cheaper)."""
        return Client(wiring=self.app().wiring).status(cid)

    def peek_history(self, cid: str) -> list[dict[str, Any]]:
        return Client(wiring=self.app().wiring).history(cid)

    def work(self) -> dict[str, int]:
        """Run the worker until the queue is empty: nothing visible, in flight or delayed
        (an event that met a running instance comes back with a delay). Due timers are
        released on the first round, before the queue is first looked at."""
        rounds = 0
        deadline = time.monotonic() + 30

        def drained() -> bool:
            nonlocal rounds
            rounds += 1
            return rounds > 1 and (self.queue_depth() == 0 or time.monotonic() > deadline)

        counts = run_worker(self.app(), [self.queue], idle_exit=10, should_stop=drained)
        assert self.queue_depth() == 0, f"the queue did not drain in 30 s: {counts}"
        assert counts["failed"] == 0, counts
        return counts

    def queue_depth(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url(self.queue),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return sum(int(n) for n in attributes.values())

    def queue_url(self, arn: str) -> str:
        return f"{self.moto_url}/{ACCOUNT}/{arn.rsplit(':', 1)[1]}"

    def dead_letters(self) -> list[str]:
        reply = self.sqs.receive_message(QueueUrl=self.queue_url(self.dead_letter), MaxNumberOfMessages=10,
                                         WaitTimeSeconds=0)
        return [m["Body"] for m in reply.get("Messages", [])]

    # -- the timer table ------------------------------------------------------------------

    def timers(self, cid: str) -> list[dict[str, Any]]:
        """The instance's items in the timer table (``pk``, ``due``, the timer ``message``),
        by the step that set them."""
        name = self.table.split("/", 1)[1]
        reply = self.dynamodb.scan(TableName=name, ConsistentRead=True,
                                   FilterExpression="sk = :timer AND contains(body, :cid)",
                                   ExpressionAttributeValues={":timer": {"S": "timer"}, ":cid": {"S": cid}})
        assert "LastEvaluatedKey" not in reply  # a handful of items: one page
        found = [{"pk": item["pk"]["S"], "due": float(item["due"]["N"]), "message": json.loads(item["body"]["S"])}
                 for item in reply["Items"]]
        return sorted(found, key=lambda t: t["message"]["step"])

    def make_due(self, timer: dict[str, Any]) -> None:
        """As if the timer's time had come: its ``due`` moves one second into the past."""
        self.dynamodb.update_item(TableName=self.table.split("/", 1)[1],
                                  Key={"pk": {"S": timer["pk"]}, "sk": {"S": "timer"}},
                                  UpdateExpression="SET #due = :due", ExpressionAttributeNames={"#due": "due"},
                                  ExpressionAttributeValues={":due": {"N": repr(time.time() - 1)}},
                                  ConditionExpression="attribute_exists(pk)")

    def close(self) -> None:
        if self._app is not None:
            self._app.wiring.close()
        self.sqs.close()
        self.dynamodb.close()


@pytest.fixture
def deploy(module_moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Site]]:
    """``deploy(example, config=None)``: the example on its own queue and table, resources
    created by ``fsm create-resources``; the test process works in the site's folder (the
    signup example writes its mail there) with boto3 pointed at moto_server: the module's
    own, which no other test file loads while these run (moto's conditional writes are not
    atomic, and the pizza test races two senders on one item)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", module_moto)
    sites: list[Site] = []

    def make(example: str, config: Path | None = None) -> Site:
        site = Site(tmp_path / f"site-{len(sites)}", example, config or EXAMPLES / example / "fsm.yaml", module_moto)
        sites.append(site)
        monkeypatch.syspath_prepend(str(site.example_dir))
        monkeypatch.chdir(site.folder)
        created = site.fsm("create-resources").stdout
        for resource in (site.queue, site.dead_letter, site.table):
            assert resource in created, created
        return site

    yield make
    for site in sites:
        site.close()


def assert_history_shape(history: list[dict[str, Any]]) -> None:
    """Every entry has the documented keys; times are ISO 8601 UTC and never go back."""
    for entry in history:
        assert HISTORY_KEYS <= set(entry), entry
        assert ISO_UTC.fullmatch(entry["time"]), entry
        assert isinstance(entry["duration"], (int, float)) and entry["duration"] >= 0, entry
        assert entry["retries"] == 0, entry
    times = [entry["time"] for entry in history]
    assert times == sorted(times), times


def transitions(history: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(h["step"], h["from"], h["event"], h["to"]) for h in history]


# -- pizza ----------------------------------------------------------------------------------------


# The hop after CONFIRM (the charge) and after entering `refunding` (the refund): a do
# action's event in fsm.yaml, the invoked actor's step in the XState version (order.json).
PIZZA_FORMS = [("fsm.yaml", "pizza", "charged", "refunded"),
               ("xstate.yaml", "pizza-xstate", "xstate.invoke:payment", "xstate.invoke:refunding")]
KITCHEN_HOUR = "xstate.after.3600000.baking"  # the event of `baking`'s `after: 3600`


@pytest.mark.parametrize("config, machine, charged, refunded", PIZZA_FORMS, ids=["yaml", "xstate"])
def test_pizza_concurrent_adds_a_compensated_cancel_the_kitchen_timer_and_delivery(
        deploy: Callable[..., Site], config: str, machine: str, charged: str, refunded: str) -> None:
    site = deploy("pizza", EXAMPLES / "pizza" / config)
    ada = site.start(machine, {"customer": "Ada"})
    assert site.worker_cli() == (1, 0, 0)  # the start: `ordering` entered, the basket empty
    opened = site.peek(ada)
    assert (opened["status"], opened["state"], opened["value"], opened["steps"], opened["retries"]) == \
        ("waiting", "ordering.empty", {"ordering": "empty"}, 1, 0)

    # A DELIVERED that the snapshot refuses fails fast (sent alone: with another event
    # already queued, it would be queued too, and rejected when its turn came).
    refused = site.send(ada, "DELIVERED", expect=FAILED)
    assert refused.stdout == "" and "'ordering.empty'" in refused.stderr and \
        "accepts: ADD_PIZZA, CANCEL, CONFIRM, REMOVE_PIZZA" in refused.stderr
    # Two customers' phones add a pizza at the same moment; both sends see step 1.
    adds = site.together([site.send_args(ada, "ADD_PIZZA", {"pizza": "margherita", "quantity": 2}),
                          site.send_args(ada, "ADD_PIZZA", {"pizza": "pepperoni"})])
    assert [done.stdout for done in adds] == ["", ""]  # on a stream, `send` only sends
    assert site.work()["records"] == 2
    both = site.peek(ada)
    assert (both["status"], both["value"], both["steps"], both["last_error"]) == \
        ("waiting", {"ordering": "filled"}, 3, None)
    assert sorted(both["context"]["pizzas"]) == ["margherita", "margherita", "pepperoni"]
    assert both["context"]["total_cents"] == 2 * 850 + 1050
    assert "pizza" not in both["context"] and "quantity" not in both["context"]
    assert transitions(site.peek_history(ada))[1:] == [(2, "ordering.empty", "ADD_PIZZA", "ordering.filled"),
                                                       (3, "ordering.filled", "ADD_PIZZA", "ordering.filled")]

    # CONFIRM and CANCEL back to back: the snapshot (ordering) takes both. CONFIRM, sent
    # first, is applied first (the instance's inbox keeps the order they came in); CANCEL
    # waits until the charge CONFIRM set off has run (run to completion), then meets
    # baking.queued, where the customer may still cancel: the paid order goes through
    # `refunding`, the saga's compensation.
    site.send(ada, "CONFIRM")
    site.send(ada, "CANCEL", {"reason": "wrong address"})
    site.work()
    status, history = site.views(ada)
    context = status["context"]
    assert (status["status"], status["value"], status["steps"], status["retries"], status["last_error"]) == \
        ("done", "refunded", 7, 0, None)
    assert context["refunded_cents"] == context["charged_cents"] == 2750
    assert context["payment_id"].startswith("pay_") and context["refund_id"].startswith("re_")
    assert context["refund_reason"] == "wrong address" and "delivered" not in context
    assert ISO_UTC.fullmatch(status["updated_at"]) and ISO_UTC.fullmatch(status["created_at"])
    assert transitions(history) == [
        (1, None, None, "ordering.empty"),
        (2, "ordering.empty", "ADD_PIZZA", "ordering.filled"),
        (3, "ordering.filled", "ADD_PIZZA", "ordering.filled"),
        (4, "ordering.filled", "CONFIRM", "payment"),
        (5, "payment", charged, "baking.queued"),
        (6, "baking.queued", "CANCEL", "refunding"),
        (7, "refunding", refunded, "refunded"),
    ]
    assert_history_shape(history)
    # The kitchen's hour (`after` on `baking`) is an item of the timer table, set at step
    # 5, when `baking` was entered; left behind, stale, once the order was refunded.
    [stale] = site.timers(ada)
    assert (stale["message"]["state"], stale["message"]["step"], stale["message"]["event"]) == \
        ("baking", 5, KITCHEN_HOUR)
    assert 3500 < stale["due"] - time.time() <= 3600

    # Two more orders go to the kitchen; both have started baking.
    bo, cy = site.start_many(machine, {"customer": "Bo", "pizzas": ["margherita"]},
                             {"customer": "Cy", "pizzas": ["pepperoni"]})
    site.work()
    site.together([["send", bo, "CONFIRM"], ["send", cy, "CONFIRM"]])
    site.work()
    site.together([["send", bo, "IN_OVEN"], ["send", cy, "IN_OVEN"]])
    assert site.work()["records"] == 2
    for cid in (bo, cy):
        oven = site.peek(cid)
        assert (oven["status"], oven["value"], oven["steps"]) == ("waiting", {"baking": "in_oven"}, 4)
        # Moving to in_oven did not re-enter `baking`: its one timer is still the one of step 3.
        [timer] = site.timers(cid)
        assert (timer["message"]["state"], timer["message"]["step"]) == ("baking", 3)
    refused = site.send(bo, "CANCEL", expect=FAILED)  # too late: the pizza is in the oven
    assert "'baking.in_oven'" in refused.stderr and "accepts: KITCHEN_FAILED, PIZZA_READY" in refused.stderr

    site.send(bo, "PIZZA_READY")
    site.work()
    site.send(bo, "DELIVERED")
    site.work()
    delivered, bo_history = site.views(bo)
    assert (delivered["status"], delivered["value"], delivered["steps"], delivered["last_error"]) == \
        ("done", "delivered", 6, None)
    assert delivered["context"]["delivered"] is True and delivered["context"]["driver"] in ("Sam", "Ana", "Kofi")
    assert delivered["context"]["customer"] == "Bo" and "refund_id" not in delivered["context"]
    assert transitions(bo_history) == [
        (1, None, None, "ordering.filled"),
        (2, "ordering.filled", "CONFIRM", "payment"),
        (3, "payment", charged, "baking.queued"),
        (4, "baking.queued", "IN_OVEN", "baking.in_oven"),
        (5, "baking.in_oven", "PIZZA_READY", "delivery"),
        (6, "delivery", "DELIVERED", "delivered"),
    ]
    assert_history_shape(bo_history)

    # The hour passes for every timer: Cy's kitchen never answered, so it fires and Cy is
    # refunded; Ada's and Bo's are released too, and ignored (their orders are done).
    for cid in (ada, bo, cy):
        site.make_due(site.timers(cid)[0])
    assert site.worker_cli() == (4, 0, 3)  # three timers, and Cy's refund hop
    timed_out, cy_history = site.views(cy)
    assert (timed_out["status"], timed_out["value"], timed_out["steps"]) == ("done", "refunded", 6)
    assert timed_out["context"]["refund_reason"] == "the kitchen did not answer in time"
    assert timed_out["context"]["refunded_cents"] == timed_out["context"]["charged_cents"] == 1050
    assert transitions(cy_history)[-2:] == [(5, "baking.in_oven", KITCHEN_HOUR, "refunding"),
                                            (6, "refunding", refunded, "refunded")]
    assert_history_shape(cy_history)
    assert (site.peek(ada)["steps"], site.peek(bo)["steps"]) == (7, 6)
    assert all(site.timers(cid) == [] for cid in (ada, bo, cy))
    assert "is done" in site.send(bo, "CANCEL", expect=FAILED).stderr
    assert site.dead_letters() == []


# -- signup ---------------------------------------------------------------------------------------


def mailed_token(site: Site, cid: str) -> str:
    mail = (site.folder / ".fsm" / "outbox" / f"{cid}.txt").read_text(encoding="utf-8")
    return next(line.split(": ", 1)[1] for line in mail.splitlines() if line.startswith("token: "))


def signup_with_lifetime(tmp_path: Path, seconds: float) -> Path:
    """A copy of the signup example whose links (and its waiting state's timeout, which
    shares the YAML anchor) last ``seconds``; its actions stay in the example's folder."""
    text = (EXAMPLES / "signup" / "fsm.yaml").read_text(encoding="utf-8")
    assert text.count("&link_lifetime 86400") == 1 and "timeout: *link_lifetime" in text
    config = tmp_path / f"signup-{seconds}.yaml"
    config.write_text(text.replace("&link_lifetime 86400", f"&link_lifetime {seconds}"), encoding="utf-8")
    return config


def test_signup_link_expires_through_the_timer_table_unless_verified(
        deploy: Callable[..., Site], tmp_path: Path) -> None:
    site = deploy("signup", signup_with_lifetime(tmp_path, LINK_LIFETIME))
    idle, typo, quick = site.start_many("signup", {"email": "idle@example.com"},   # never answers
                                        {"email": "typo@example.com"},            # a wrong token first
                                        {"email": "Quick@Example.com"})           # the right one at once
    assert site.work()["records"] == 9
    for cid in (idle, typo, quick):
        waiting = site.peek(cid)
        assert (waiting["status"], waiting["state"], waiting["steps"]) == ("waiting", "awaiting_verification", 3)
        [timer] = site.timers(cid)
        assert (timer["message"]["kind"], timer["message"]["event"], timer["message"]["step"]) == \
            ("timer", "timeout", 3)
        assert LINK_LIFETIME - 30 < timer["due"] - time.time() <= LINK_LIFETIME

    site.together([site.send_args(typo, "VERIFY", {"token": "not-the-token"}),
                   site.send_args(quick, "VERIFY", {"token": mailed_token(site, quick)})])
    site.work()
    retyped = site.peek(typo)
    assert (retyped["status"], retyped["state"], retyped["steps"], retyped["context"]["failed_attempts"]) == \
        ("waiting", "awaiting_verification", 5, 1)
    verified = site.peek(quick)
    assert (verified["status"], verified["state"], verified["steps"]) == ("done", "verified", 5)
    assert verified["context"]["verified"] is True and verified["context"]["email"] == "quick@example.com"
    # Re-entering the state set a second timer; the first is still in the table, stale.
    assert [t["message"]["step"] for t in site.timers(typo)] == [3, 5]

    # The first timers' time comes: idle's fires; typo's (the state was re-entered since)
    # and quick's (verified before it) are released too, and ignored.
    for cid in (idle, typo, quick):
        site.make_due(site.timers(cid)[0])
    assert site.worker_cli() == (3, 0, 3)  # three timers; `expired` is final: no next hop
    expired, idle_history = site.views(idle)
    assert (expired["status"], expired["state"], expired["steps"], expired["last_error"]) == \
        ("done", "expired", 4, None)
    assert expired["context"]["closed_because"] == "expired" and "token_sha256" not in expired["context"]
    assert transitions(idle_history) == [(1, None, None, "registering"),
                                         (2, "registering", "created", "sending_link"),
                                         (3, "sending_link", "sent", "awaiting_verification"),
                                         (4, "awaiting_verification", "timeout", "expired")]
    assert_history_shape(idle_history)
    assert site.peek(typo) == retyped
    assert site.peek(quick) == verified
    assert [t["message"]["step"] for t in site.timers(typo)] == [5]
    assert site.timers(idle) == [] and site.timers(quick) == []

    # The second timer has not come: the right token still verifies. Too late for idle.
    late, _ = site.together([site.send_args(idle, "VERIFY", {"token": mailed_token(site, idle)}),
                             site.send_args(typo, "VERIFY", {"token": mailed_token(site, typo)})],
                            expect=[FAILED, OK])
    assert "is done" in late.stderr
    site.work()
    status, history = site.views(typo)
    assert (status["status"], status["state"], status["steps"], status["last_error"]) == \
        ("done", "verified", 7, None)
    assert transitions(history)[3:] == [(4, "awaiting_verification", "VERIFY", "checking_token"),
                                        (5, "checking_token", "invalid", "awaiting_verification"),
                                        (6, "awaiting_verification", "VERIFY", "checking_token"),
                                        (7, "checking_token", "valid", "verified")]
    assert_history_shape(history)
    assert site.dead_letters() == []


def test_signup_short_link_lifetime_rides_on_the_queue_delay(deploy: Callable[..., Site], tmp_path: Path) -> None:
    """A timeout of a few seconds needs no timer table: the standard queue holds the
    timer message back itself (``DelaySeconds``) and the worker applies it when it shows."""
    site = deploy("signup", signup_with_lifetime(tmp_path, 2))
    cid = site.start("signup", {"email": "slow@example.com"})
    started = time.monotonic()
    counts = site.work()  # until the queue is empty: the delayed timeout included
    assert time.monotonic() - started >= 2
    assert (counts["records"], counts["timers"]) == (4, 0)
    status = site.peek(cid)
    assert (status["status"], status["state"], status["steps"]) == ("done", "expired", 4)
    assert transitions(site.peek_history(cid))[-1] == (4, "awaiting_verification", "timeout", "expired")
    assert site.timers(cid) == []


# -- approval -------------------------------------------------------------------------------------


def test_approval_escalation_cancel_and_director_timeout(deploy: Callable[..., Site]) -> None:
    site = deploy("approval")
    escalated, withdrawn, unanswered = site.start_many(
        "approval", {"employee": "ada", "amount_cents": 12000, "purpose": "train tickets"},
        {"employee": "bo", "amount_cents": 900},
        {"employee": "cy", "amount_cents": 250000})  # above director_above_cents
    assert site.worker_cli() == (6, 0, 0)
    assert [site.peek(c)["state"] for c in (escalated, withdrawn, unanswered)] == \
        ["awaiting_manager", "awaiting_manager", "awaiting_director"]

    # The manager escalates one claim, the employee withdraws another, and the week a
    # director had for the third has passed.
    site.together([site.send_args(escalated, "ESCALATE", {"by": "maria"}),
                   ["cancel", withdrawn, "--reason", "claim withdrawn"]])
    [director_timer] = site.timers(unanswered)
    assert 604800 - 60 < director_timer["due"] - time.time() <= 604800
    site.make_due(director_timer)
    assert site.work()["timers"] == 1

    assert site.peek(escalated)["state"] == "awaiting_director"
    cancelled, cancelled_history = site.views(withdrawn)
    assert (cancelled["status"], cancelled["state"], cancelled["steps"]) == ("cancelled", "awaiting_manager", 2)
    assert cancelled["last_error"] == "cancelled: claim withdrawn"
    cancel_entry = cancelled_history[-1]
    assert (cancel_entry["step"], cancel_entry["from"], cancel_entry["event"], cancel_entry["to"],
            cancel_entry["cancelled"]) == (2, "awaiting_manager", "cancel", None, "claim withdrawn")
    assert_history_shape(cancelled_history)

    timed_out = site.peek(unanswered)
    assert (timed_out["status"], timed_out["state"], timed_out["steps"]) == ("done", "rejected", 3)
    [decision] = timed_out["context"]["decisions"]
    assert (decision["verdict"], decision["by"], decision["reason"], decision["state"]) == \
        ("rejected", "timeout", "no decision in time", "awaiting_director")
    assert transitions(site.peek_history(unanswered))[-1] == (3, "awaiting_director", "timeout", "rejected")

    _, refused, cancelled_again = site.together(
        [site.send_args(escalated, "APPROVE", {"by": "dirk"}),
         site.send_args(withdrawn, "APPROVE", {"by": "maria"}),
         ["cancel", withdrawn]], expect=[OK, FAILED, FAILED])
    assert "is cancelled" in refused.stderr and "already cancelled" in cancelled_again.stderr
    site.work()
    status, history = site.views(escalated)
    assert (status["status"], status["state"], status["steps"], status["last_error"]) == ("done", "paid", 6, None)
    assert [(d["verdict"], d["by"]) for d in status["context"]["decisions"]] == \
        [("escalated", "maria"), ("approved", "dirk")]
    assert status["context"]["payout"] == {"to": "ada", "cents": 12000, "run": "next"}
    assert transitions(history) == [
        (1, None, None, "submitted"),
        (2, "submitted", "needs_manager", "awaiting_manager"),
        (3, "awaiting_manager", "ESCALATE", "awaiting_director"),
        (4, "awaiting_director", "APPROVE", "booking"),
        (5, "booking", "booked", "scheduling_payout"),
        (6, "scheduling_payout", "scheduled", "paid"),
    ]
    assert_history_shape(history)
    # `booked` is local: booking and scheduling the payout committed together.
    assert history[3]["time"] == history[4]["time"]
    assert site.peek(withdrawn) == cancelled  # nothing reached the cancelled claim
    assert site.dead_letters() == []


# -- shop (ASL) ----------------------------------------------------------------------------------


def test_shop_asl_order_with_map_and_parallel_runs_through_fsm_worker(deploy: Callable[..., Site]) -> None:
    """The Step Functions definition on SQS + DynamoDB: ``fsm start --input``, then one
    ``fsm worker`` process drains the queue: the Map's children, the Parallel's branches
    and both joins go through the queue and the table like any step."""
    site = deploy("shop")
    order = {"order": "A-7", "card": "4242", "lines": [{"sku": "tea", "qty": 2}, {"sku": "mug", "qty": 1},
                                                      {"sku": "pot", "qty": 1}]}
    cid = site.fsm("start", "--machine", "order", "--input", json.dumps(order)).stdout.strip()
    declined = site.fsm("start", "--machine", "order", "--input",
                        json.dumps({**order, "order": "A-8", "card": "4000"})).stdout.strip()
    records, failed, _ = site.worker_cli(idle_exit=2)
    assert failed == 0 and records > 10
    status = json.loads(site.fsm("status", cid, "--json").stdout)
    assert status["status"] == "done"
    assert status["output"] == {"order": "A-7", "total": 43.0, "charge": "ch-A-7", "reserved": 4,
                                "summary": "order A-7 paid 43.0 with ch-A-7"}
    assert len(status["children"]) == 5          # three lines priced, two branches
    assert all(site.peek(child)["status"] == "done" for child in status["children"])
    refused = json.loads(site.fsm("status", declined, "--json", expect=OK).stdout)
    assert (refused["status"], refused["error"], refused["cause"]) == (
        "failed", "OrderDeclined", "card ending 4000 was declined")
