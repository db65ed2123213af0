"""The ordered inbox under real concurrency, on every durable store.

Senders are OS processes (``inbox_kit`` run as a script), each with its own embedded
runtime (or, as a Lambda container, ``fsm.handler``), released together; the stores are
real: a sqlite file, redis-server, memcached, DynamoDB on moto_server (a table of this
test's own; the senders' calls to it are made one at a time, see
``inbox_kit.serialise_aws_calls``). What a user relies on:

- every event sent is applied exactly once, each sender's in the order it sent them, in
  the inbox's order;
- the same event delivered twice (two clients with one ``event_id``; one SQS record
  handed to two Lambda containers, and again to one of them) is applied once;
- an event sent while the instance runs a chain of internal steps (do actions, one
  committed step each) waits, and is judged in the state the chain settles in;
- when the last sender has exited, nothing is stranded: the record is read straight from
  the store, and no command runs after the senders (a command would drain what they left).

They found two races in how a nudge (a ``work`` message) took the lease, both fixed,
each with a test of its own on every store in ``tests/contract/test_inbox_races.py``: a
late nudge that found the inbox drained kept the lease; a nudge between two internal steps
broke run to completion.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from inbox_kit import Senders, write_config

from config.settings import Settings
from fsm.app.resources import create_resources
from fsm.app.wiring import open_role
from fsm.client import Client
from fsm.message import Kind, Message

SENDERS = 4
EVENTS = {"sqlite": 25, "redis": 25, "memcached": 25, "dynamodb": 15}   # moto_server: ~140 calls/s


@dataclass
class Backend:
    kind: str
    settings: dict[str, Any]    # for Settings(**settings), in every process
    config: Path
    folder: Path
    store: Any                  # a handle of the test's own, for reading records

    def start(self, machine: str) -> str:
        """Start an instance (one command, before any sender); return its id."""
        cid = f"inbox-{self.kind}-{uuid.uuid4().hex[:10]}"
        client = Client(config=str(self.config), settings=Settings(**self.settings))
        try:
            client.start(machine, correlation_id=cid)
        finally:
            client.wiring.close()
        assert self.store.get(cid)["status"] == "waiting"
        return cid

    def senders(self) -> Senders:
        return Senders(self.folder, self.config, self.settings)


@pytest.fixture(params=["sqlite", "redis", "memcached", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    settings: dict[str, Any] = {}
    if kind == "sqlite":
        settings["store"] = [f"sqlite:///{tmp_path / 'fsm.sqlite3'}"]
    elif kind == "redis":
        settings["store"] = [request.getfixturevalue("redis_url")]
    elif kind == "memcached":
        settings["store"] = [request.getfixturevalue("memcached_url")]
    else:   # the shared moto_server, never reset here: a table of our own
        table = f"arn:aws:dynamodb:us-east-1:123456789012:table/inbox-{uuid.uuid4().hex[:8]}"
        settings.update(store=[table], endpoints={table: request.getfixturevalue("moto_url")})
        list(create_resources(Settings(**settings)))
    store = open_role("store", settings["store"][0], Settings(**settings))
    try:
        yield Backend(kind, settings, write_config(tmp_path), tmp_path, store)
    finally:
        store.close()


def nothing_stranded(record: dict[str, Any], status: str = "waiting") -> None:
    """Settled, inbox drained, lease free, with every sender gone."""
    owner = record.get("lease_owner")
    left = [entry["id"] for entry in record.get("inbox") or []]
    assert not owner, f"the lease is still held by {owner!r}, a process that has exited; stranded: {left}"
    assert record["status"] == status, record
    assert not record.get("inbox"), f"events left in the inbox: {record.get('inbox')}"


def taken(store: Any, cid: str) -> list[dict[str, Any]]:
    """The history entries that took an inbox event, in commit order."""
    return [entry for entry in store.history(cid) if entry.get("event_id")]


def test_concurrent_senders_each_event_applied_once_in_order(backend: Backend) -> None:
    events = EVENTS[backend.kind]
    cid = backend.start("tally")
    senders = backend.senders()
    for k in range(SENDERS):
        senders.spawn("send", f"sender-{k}", cid=cid, sender=f"s{k}", count=events)
    senders.go()
    sent = senders.results()
    # The race was real: all the senders were sending at one moment.
    spans = [result["sending"] for result in sent.values()]
    assert max(began for began, _ in spans) < min(ended for _, ended in spans), spans

    record = backend.store.get(cid)   # read, not a command: nothing drains it now
    applied = [f"{a['sender']}-{a['seq']}" for a in record["context"].get("applied", [])]
    twice = [event_id for event_id, n in collections.Counter(applied).items() if n > 1]
    assert not twice, f"applied more than once: {twice}"
    # The application order is the inbox order: one commit per event, positions 1, 2, ...
    history = taken(backend.store, cid)
    assert [e["pos"] for e in history] == list(range(1, len(applied) + 1))
    assert [e["event_id"] for e in history] == applied
    # None lost: what was not applied is still queued, after it and in order.
    queued = record.get("inbox") or []
    assert [e["pos"] for e in queued] == list(range(len(applied) + 1, record["inbox_end"] + 1))
    order = applied + [e["id"] for e in queued]
    sent_ids = {f"s{k}-{i}" for k in range(SENDERS) for i in range(events)}
    assert len(order) == len(sent_ids) and set(order) == sent_ids, f"lost: {sorted(sent_ids - set(order))}"
    for k in range(SENDERS):
        seqs = [int(event_id.split("-")[1]) for event_id in order if event_id.startswith(f"s{k}-")]
        assert seqs == list(range(events)), f"sender s{k}'s events out of order: {seqs}"

    nothing_stranded(record)
    assert record["inbox_end"] == SENDERS * events          # each appended once


def test_a_duplicate_delivery_is_applied_once(backend: Backend) -> None:
    cid = backend.start("tally")
    body = Message(machine="tally", correlation_id=cid, kind=Kind.EVENT, event="item",
                   data={"sender": "lambda", "seq": 0}, event_id="sqs-1", sent_at=time.time()).encode()
    senders = backend.senders()
    for name in ("client-a", "client-b"):     # two clients, one event id
        senders.spawn("duplicate", name, cid=cid, event_id="client-1", data={"sender": "client", "seq": 0})
    senders.spawn("handler", "lambda-a", body=body, deliveries=1)   # one SQS record, two containers,
    senders.spawn("handler", "lambda-b", body=body, deliveries=2)   # and redelivered to one of them
    senders.go()
    results = senders.results()

    assert results["client-a"]["event_id"] == results["client-b"]["event_id"] == "client-1"
    replies = results["lambda-a"]["replies"] + results["lambda-b"]["replies"]
    assert replies == [{"batchItemFailures": []}] * 3
    record = backend.store.get(cid)
    senders_applied = sorted(a["sender"] for a in record["context"].get("applied", []))
    took = sorted(e["event_id"] for e in taken(backend.store, cid))
    queued = [e["id"] for e in record.get("inbox") or []]
    assert record["inbox_end"] == 2, record                 # each appended once: the copies never were
    # Each event once: taken by one commit (its action ran there) or, at worst, still queued.
    assert sorted(took + queued) == ["client-1", "sqs-1"], (took, queued)
    assert senders_applied == sorted({"client-1": "client", "sqs-1": "lambda"}[i] for i in took), senders_applied
    nothing_stranded(record)
    assert took == ["client-1", "sqs-1"]


def test_an_event_sent_during_a_chain_of_internal_steps_waits_for_it(backend: Backend) -> None:
    cid = backend.start("chain")
    senders = backend.senders()
    senders.spawn("go", "starter", cid=cid)
    senders.spawn("poke", "poker", cid=cid)
    senders.go()
    poker = senders.results()["poker"]

    record = backend.store.get(cid)
    history = backend.store.history(cid)
    internal = record["context"]["internal"]
    # The premise: poke went in while a step of the chain was under way, before the last ended.
    assert poker["seen_status"] == "running" and poker["seen_state"].startswith("busy"), poker
    assert poker["sent_at"] < internal[-1]["done_at"], (poker, internal)
    moves = [(e["from"], e["event"], e["to"]) for e in history if e.get("event")]
    assert moves == [("idle", "go", "busy1"), ("busy1", "next", "busy2"), ("busy2", "next", "busy3"),
                     ("busy3", "next", "settled"), ("settled", "poke", "poked")], moves
    assert record["state"] == "poked"
    assert [a["by"] for a in record["context"]["applied"]] == ["poker"]
    assert [i["state"] for i in internal] == ["busy1", "busy2", "busy3"]
    nothing_stranded(record, "done")
