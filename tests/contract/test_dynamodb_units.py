"""What a transition costs on DynamoDB, counted by DynamoDB's own rules (the ``fsm cost``
meter: table write units by the larger item image, index writes per index by its
projection, two for a moved key, none when nothing projected changed), on the sample
``fsm cost`` runs (SQS + DynamoDB, the built-in linear machine, in-process moto).

An instance pays once for being created and for finishing (its first record, the index
entries put then and moved at the end); every transition in between pays its own writes.
The write-unit budgets are about those: measured here as the difference between two
samples whose chains differ only in length, divided by the transitions that adds.
"""

from __future__ import annotations

import argparse
import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("moto")

CONTEXT = 1024


@dataclass
class Run:
    transitions: int
    quantities: Counter
    calls: Counter


def sample(states: int, optimistic: bool, context: int = CONTEXT, tmp_path: Any = None) -> Run:
    from config.loader import load_text
    from fsm.app import cost

    settings = None
    if optimistic:
        settings = tmp_path / "optimistic.yaml"
        settings.write_text("concurrency: optimistic\n")
    args = argparse.Namespace(machine=None, context_bytes=context, batch_size=2, memory=128, region=None,
                              transitions=2 * states, json=False, settings=str(settings) if settings else None,
                              store=None, config=None)
    plan = cost.make_plan(args)
    plan.definitions = load_text(cost.linear_machine_yaml(states), "<built-in>")
    result = cost.run_sample(plan)
    assert not result.meter.errors and result.failed == 0
    assert result.transitions == 2 * states
    return Run(result.transitions, result.meter.quantities, result.meter.calls)


def per_transition(short: Run, long: Run, key: str, counter: str = "quantities") -> float:
    """The cost of one more transition in a chain: what the longer sample spent beyond
    the shorter one, per transition it made beyond it."""
    return (getattr(long, counter)[key] - getattr(short, counter)[key]) / (long.transitions - short.transitions)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Run, Run]]:
    tmp = tmp_path_factory.mktemp("cost")
    with contextlib.chdir(tmp), pytest.MonkeyPatch.context() as patch:    # no machines file: the built-in one
        patch.delenv("FSM_CONFIG", raising=False)
        return {mode: (sample(6, mode == "optimistic", tmp_path=tmp), sample(26, mode == "optimistic", tmp_path=tmp))
                for mode in ("locked", "optimistic")}


def test_dynamodb_no_index_write_in_a_running_chain(runs: dict[str, tuple[Run, Run]]) -> None:
    """The pending index entry keeps the time the record started owing and the listing
    entries move only with the status: an ordinary transition writes no index."""
    for short, long in runs.values():
        assert per_transition(short, long, "ddb_index_write") == 0
        # ... and what an instance pays for its whole life is its entries put and moved
        # once: pending (put, removed), by status and by machine (put, then moved: 2 each).
        assert short.quantities["ddb_index_write"] / (short.transitions / 6) == 8


def test_dynamodb_locked_transition_budget(runs: dict[str, tuple[Run, Run]]) -> None:
    """Locked: an acquire and a commit, both conditional UpdateItems of a record under
    2 KB (2 units each), plus the history pages (a PutItem per few transitions)."""
    short, long = runs["locked"]
    assert per_transition(short, long, "dynamodb.UpdateItem", "calls") == 2
    assert per_transition(short, long, "dynamodb.PutItem", "calls") <= 0.5
    assert per_transition(short, long, "dynamodb.TransactWriteItems", "calls") == 0
    table = per_transition(short, long, "ddb_write")
    assert table <= 4 + per_transition(short, long, "dynamodb.PutItem", "calls") + 1e-9
    assert table <= 4.5


def test_dynamodb_optimistic_transition_budget(runs: dict[str, tuple[Run, Run]]) -> None:
    """Optimistic: one conditional UpdateItem (2 units) and the send, plus the history
    pages; no transaction, no read."""
    short, long = runs["optimistic"]
    assert per_transition(short, long, "dynamodb.UpdateItem", "calls") == 1
    assert per_transition(short, long, "dynamodb.GetItem", "calls") == 0
    assert not any("Transact" in name for name in {**short.calls, **long.calls})
    pages = per_transition(short, long, "dynamodb.PutItem", "calls")
    assert pages <= 0.5
    table = per_transition(short, long, "ddb_write")
    assert table <= 2 + pages + 1e-9 and table <= 2.5


def test_dynamodb_record_size_with_a_1kb_context(tmp_path: Any) -> None:
    """A record with a 1 KB context, as DynamoDB sizes it: under 1.5 KB settled, its
    carried history apart; every write of a running chain within 2 KB (2 write units)."""
    from conftest import in_process_dynamodb

    from sources.dynamodb import DynamoStore
    from sources.dynamodb_items import HISTORY_TAIL, item_size

    with in_process_dynamodb() as (url, client):
        store = DynamoStore(url, client=client)
        table = url.rsplit("/", 1)[1]
        context = {"data": "x" * (CONTEXT - len('{"data":""}'))}
        cid = "order-0000000000000000000000000000001"
        base = {"id": cid, "machine": "linear", "version": "", "state": "s0", "status": "running", "step": 0,
                "retries": 0, "fence": 1, "lease_owner": "", "lease_expires": 0, "context": context,
                "consumed": None, "event_ids": [], "last_error": None, "failed_message": None, "checkpoint": None,
                "created_at": 1.7e9 + 0.123456, "updated_at": 1.7e9 + 0.123456, "expires_at": 0, "outbox": []}
        assert store.swap(cid, None, base).ok
        sizes = []
        for step in range(1, 30):
            now = 1.7e9 + step + 0.123456
            running = step < 29
            outbox = [{"message": {"machine": "linear", "correlation_id": cid, "kind": "step", "step": step,
                                   "retries": 0, "event": "next", "data": {}, "fence": step, "state": f"s{step}",
                                   "event_id": None, "store": 0, "copy": False, "busy": 0, "reason": None,
                                   "version": "", "sent_at": now, "parent": None, "v": 1}, "delay": 0.0}]
            lease = {"lease_owner": "vm:20247:3b65b6:53", "lease_expires": int(now * 1000) + 900_000,
                     "fence": step + 1}
            assert store.swap(cid, {"fence": step}, lease).ok
            entry = {"step": step, "from": f"s{step - 1}", "event": "next", "to": f"s{step}",
                     "time": "2026-11-26T03:45:01.028Z", "duration": 0.000099, "retries": 0}
            assert store.swap(cid, {"fence": step + 1}, {
                "state": f"s{step}", "status": "running" if running else "done", "step": step,
                "context": context, "outbox": outbox if running else [], "lease_owner": "", "lease_expires": 0,
                "consumed": {"kind": "step", "step": step - 1, "retries": 0}, "updated_at": now,
                "pending": now if running else 0.0}, history=[entry]).ok
            item = client.get_item(TableName=table, Key={"pk": {"S": cid}, "sk": {"S": "record"}})["Item"]
            sizes.append((item_size(item), item_size({k: v for k, v in item.items() if k != HISTORY_TAIL})))
        assert max(whole for whole, _ in sizes[:-1]) <= 2048       # every running write: 2 units
        settled = sizes[-1][1]
        assert settled < 1536, settled
        assert len(store.history(cid)) == 29


def test_dynamodb_kinesis_checkpoint_rides_in_the_commit() -> None:
    """Kinesis + DynamoDB: the instance's position is written by the commit's own
    conditional UpdateItem (no checkpoint item, no transaction) and reads back."""
    from conftest import in_process_dynamodb

    from sources.dynamodb import DynamoStore

    with in_process_dynamodb() as (url, client):
        store = DynamoStore(url, client=client)
        assert store.writes_checkpoints and not store.checkpoint_items
        calls: Counter = Counter()
        client.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.update([model.name]))
        assert store.swap("k", None, {"id": "k", "status": "running", "fence": 1, "lease_owner": ""}).ok
        position = {"arn": "arn:aws:kinesis:us-east-1:123456789012:stream/s", "shard": "shardId-000000000000",
                    "sequence": "49590000000000000000000000000000000000000000000000000001"}
        assert store.swap("k", {"fence": 1}, {"checkpoint": position, "pending": 0.0, "status": "waiting"},
                          history=[{"n": 1}]).ok
        assert calls == Counter({"UpdateItem": 2})
        assert store.get("k")["checkpoint"] == position
        table = url.rsplit("/", 1)[1]
        assert not [item for item in client.scan(TableName=table)["Items"] if item["pk"]["S"].startswith("ckpt#")]


def test_dynamodb_index_writes_are_counted_by_dynamodbs_rules() -> None:
    """Per index: an entry put or removed is one write, a moved key two, a change of a
    projected attribute one, anything else none; each by the entry's size in 1 KB."""
    from fsm.app.cost_meter import DynamoLedger, Index

    ledger = DynamoLedger()
    keys_only = Index(("p", "t"), ("pk", "sk", "p", "t"))
    everything = Index(("q", "u"), None)
    ledger._tables[("r", "t")] = (("pk", "sk"), [keys_only, everything])
    big = {"S": "x" * 1500}
    base = {"pk": {"S": "a"}, "sk": {"S": "record"}, "body": big}
    old = {**base, "p": {"S": "p1"}, "t": {"N": "1"}, "q": {"S": "q"}, "u": {"N": "1"}}
    assert ledger.index_writes("r", "t", old, {**old, "body": {"S": "y" * 1400}}) == 2  # ALL only, 2 KB
    assert ledger.index_writes("r", "t", old, {**old, "t": {"N": "2"}}) == 2 + 2        # moved key; ALL: 2 KB
    assert ledger.index_writes("r", "t", old, {**old, "u": {"N": "2"}}) == 2 + 2        # ALL moved: 2 x 2 KB
    assert ledger.index_writes("r", "t", old, dict(old)) == 0                           # nothing changed
    assert ledger.index_writes("r", "t", None, old) == 1 + 2                            # both put
    assert ledger.index_writes("r", "t", old, None) == 1 + 2                            # both removed
    assert ledger.index_writes("r", "t", base, {**base, "body": {"S": "z"}}) == 0      # in neither index
