"""Senders in processes of their own, for ``test_inbox_concurrency``.

Run as a script, this module is one sender: an OS process that loads the machines and
settings it is given, says ``ready`` on stdout, waits for ``go`` on stdin (so that every
sender starts at the same moment), does its part through a public entry point (the
client on the embedded runtime, or ``fsm.handler.lambda_handler`` with a Lambda record)
and prints one JSON line with what it saw. Imported, it gives the test the machines, the
actions they name and :class:`Senders`, which starts such processes and collects them.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fsm import Action

KIT = Path(__file__).resolve()
ROOT = KIT.parents[2]
SQS_SAMPLE = ROOT / "tests" / "events" / "sqs.json"   # the record shape Lambda documents

MACHINES = """
machines:
  # Every event it takes is appended to the context: the application order a user sees.
  - name: tally
    states:
      - name: open
        initial: true
        transitions:
          - {event: item, target: open, action: inbox_kit.Apply}
  # `go` starts three internal steps (do actions, one committed step each); `poke` is
  # taken only once they settle.
  - name: chain
    states:
      - name: idle
        initial: true
        transitions: [{event: go, target: busy1}]
      - name: busy1
        do_action: {class: inbox_kit.Slow, params: {seconds: 0.4}}
        transitions: [{event: next, target: busy2}]
      - name: busy2
        do_action: {class: inbox_kit.Slow, params: {seconds: 0.4}}
        transitions: [{event: next, target: busy3}]
      - name: busy3
        do_action: {class: inbox_kit.Slow, params: {seconds: 0.4}}
        transitions: [{event: next, target: settled}]
      - name: settled
        transitions: [{event: poke, target: poked, action: inbox_kit.Apply}]
      - {name: poked, final: true}
"""


class Apply(Action):
    """Appends the event's data to ``context["applied"]``, with the id of the process
    that applied it."""

    def execute(self, context: Any, obj: dict[str, Any]) -> str | None:
        context.setdefault("applied", []).append({**obj["event_data"], "pid": os.getpid()})
        return None


class Slow(Action):
    """An internal step that takes a while: notes when it finished, then moves on."""

    def execute(self, context: Any, obj: dict[str, Any]) -> str | None:
        time.sleep(float(self.params["seconds"]))
        context.setdefault("internal", []).append({"state": context.current_state.name, "done_at": time.time()})
        return "next"


def write_config(folder: Path) -> Path:
    path = folder / "fsm.yaml"
    path.write_text(MACHINES, encoding="utf-8")
    return path


def sqs_event(body: str) -> dict[str, Any]:
    """One SQS record as Lambda hands it over, carrying ``body``."""
    sample = json.loads(SQS_SAMPLE.read_text(encoding="utf-8"))
    record = copy.deepcopy(sample["Records"][0])
    for key in ("MessageGroupId", "MessageDeduplicationId", "SequenceNumber"):  # a standard queue
        record["attributes"].pop(key, None)
    record["body"] = body
    return {"Records": [record]}


# ---- the parent's side ------------------------------------------------------------------


class Senders:
    """OS processes running this module; ``go()`` releases them all at once."""

    def __init__(self, folder: Path, config: Path, settings: dict[str, Any]):
        self.folder, self.config, self.settings = folder, config, settings
        self.running: list[tuple[str, subprocess.Popen[str], Path]] = []

    def spawn(self, role: str, name: str, script: Path = KIT, **args: Any) -> None:
        """Start ``script`` (by default this module) as sender ``name`` playing ``role``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FSM_")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        # A Lambda container takes everything from its environment; clients get it as arguments.
        env.update(FSM_CONFIG=str(self.config), FSM_STORE=",".join(self.settings["store"]),
                   FSM_ENDPOINTS=json.dumps(self.settings.get("endpoints") or {}))
        spec = {"config": str(self.config), "settings": self.settings, **args}
        if any(name.startswith("arn:") for name in self.settings["store"]):
            spec["aws_lock"] = str(self.folder / "moto.lock")
        log = self.folder / f"{name}.stderr"
        process = subprocess.Popen([sys.executable, str(script), role, json.dumps(spec)], cwd=self.folder, env=env,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
        self.running.append((name, process, log))

    def go(self, timeout: float = 30.0) -> None:
        """Wait until every process has loaded, then release them together."""
        deadline = time.monotonic() + timeout
        for name, process, log in self.running:
            line = process.stdout.readline() if process.stdout else ""
            if line.strip() != "ready" or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"sender {name} did not start: {line!r}\n{log.read_text()}")
        for _, process, _ in self.running:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.close()
            process.stdin = None  # communicate() must not flush it again

    def results(self, timeout: float = 90.0) -> dict[str, Any]:
        """What each process printed, once all of them have exited (status 0)."""
        found: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        for name, process, log in self.running:
            try:
                out, _ = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"sender {name} still running after {timeout:g} s\n{log.read_text()}")
            assert process.returncode == 0, f"sender {name} exited {process.returncode}\n{log.read_text()}"
            found[name] = json.loads(out.strip().splitlines()[-1])
        self.running = []
        return found

    def kill(self) -> None:
        for _, process, _ in self.running:
            if process.poll() is None:
                process.kill()
                process.wait(5)


# ---- one sender ---------------------------------------------------------------------------


def serialise_aws_calls(lock_path: str) -> None:
    """Make this process's AWS calls one at a time with every other sender's (a file
    lock around each call).

    moto_server runs each request on a thread of its own and checks a write's condition
    and applies the write as two steps with no lock between them, so two conditional
    writes to one item can both succeed (four processes doing compare-and-set on one
    counter: 223 writes succeeded, the counter said 222). DynamoDB serialises the writes
    to an item; this restores that for moto, as ``conftest.Serialised`` does for threads.
    """
    import fcntl

    from botocore.client import BaseClient

    call, lock = BaseClient._make_api_call, open(lock_path, "a")  # noqa: SIM115 - held for the process

    def one_at_a_time(self: Any, operation: str, params: dict[str, Any]) -> Any:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return call(self, operation, params)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    BaseClient._make_api_call = one_at_a_time  # type: ignore[method-assign]


def _client(spec: dict[str, Any]) -> Any:
    from config.settings import Settings
    from fsm.client import Client

    return Client(config=spec["config"], settings=Settings(**spec["settings"]))


def _await_go() -> None:
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"


def send_items(spec: dict[str, Any]) -> dict[str, Any]:
    """``count`` events, one after the other, each saying who sent it and its rank."""
    client = _client(spec)
    _await_go()
    sender, ids, began = spec["sender"], [], time.time()
    for seq in range(spec["count"]):
        ids.append(client.send_event(spec["cid"], "item", {"sender": sender, "seq": seq},
                                     event_id=f"{sender}-{seq}"))
    return {"event_ids": ids, "sending": [began, time.time()]}


def send_duplicate(spec: dict[str, Any]) -> dict[str, Any]:
    """One event with a given id (another process sends the very same one)."""
    client = _client(spec)
    _await_go()
    return {"event_id": client.send_event(spec["cid"], "item", spec["data"], event_id=spec["event_id"])}


def lambda_container(spec: dict[str, Any]) -> dict[str, Any]:
    """A Lambda container: the handler, loaded from the environment, given the same SQS
    record ``deliveries`` times (a redelivery reaching a warm container)."""
    from fsm.handler import app, lambda_handler

    app()  # the cold start, before the race
    event = sqs_event(spec["body"])
    _await_go()
    return {"replies": [lambda_handler(copy.deepcopy(event), None) for _ in range(spec["deliveries"])]}


def send_go(spec: dict[str, Any]) -> dict[str, Any]:
    client = _client(spec)
    _await_go()
    return {"event_id": client.send_event(spec["cid"], "go")}


def poke_mid_chain(spec: dict[str, Any]) -> dict[str, Any]:
    """Wait (reading the store, running nothing) until an internal step of the chain is
    under way (running, its lease held: a do action is sleeping), then send ``poke``; say
    when it was sent and what the record was just before."""
    client = _client(spec)
    store = client.wiring.stores[0]
    _await_go()
    deadline = time.monotonic() + 20
    while True:
        record = store.get(spec["cid"]) or {}
        if record.get("status") == "running" and record.get("lease_owner"):
            break
        assert time.monotonic() < deadline, f"the chain never started: {record}"
        time.sleep(0.01)
    sent_at = time.time()
    event_id = client.send_event(spec["cid"], "poke", {"by": "poker"})
    return {"sent_at": sent_at, "seen_state": record.get("state"), "seen_status": record.get("status"),
            "event_id": event_id}


ROLES = {"send": send_items, "duplicate": send_duplicate, "handler": lambda_container, "go": send_go,
         "poke": poke_mid_chain}


if __name__ == "__main__":
    role, spec = sys.argv[1], json.loads(sys.argv[2])
    if spec.get("aws_lock"):
        serialise_aws_calls(spec["aws_lock"])
    print(json.dumps(ROLES[role](spec)), flush=True)
