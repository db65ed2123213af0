"""Integers beyond 64 bits are valid JSON and Python ints: a context holding one (an
account number, a 128-bit id) keeps it exactly across transitions, messages and stores,
never turned into a float on the way."""

from __future__ import annotations

from typing import Any

import pytest

from config.loader import load_text
from config.settings import Settings
from fsm import Action, Context, codec
from fsm.client import Client

BIG = 2**70 + 1
MACHINE = """
machines:
  - name: ledger
    states:
      - {name: a, initial: true, do_action: test_big_numbers.Keep, transitions: [{event: go, target: b}]}
      - {name: b, do_action: test_big_numbers.Keep, transitions: [{event: go, target: c}]}
      - {name: c, final: true}
"""


class Keep(Action):
    def execute(self, context: Context, obj: dict[str, Any]) -> str:
        context["seen"] = [*context.get("seen", []), context["account"] + 1]
        return "go"


@pytest.mark.parametrize("store", ["memory://", "sqlite:///big.sqlite3"])
def test_a_context_keeps_integers_beyond_64_bits_exactly(store: str, tmp_path: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    client = Client(settings=Settings(store=[store]), definitions=load_text(MACHINE))
    cid = client.start("ledger", {"account": BIG, "debt": -BIG})
    status = client.status(cid)
    assert status["status"] == "done"
    context = status["context"]
    assert context == {"account": BIG, "debt": -BIG, "seen": [BIG + 1, BIG + 1]}
    assert all(type(n) is int for n in (context["account"], context["debt"], *context["seen"]))


def test_the_codec_reads_back_what_it_wrote() -> None:
    value = {"big": [BIG, -BIG, 2**64], "u64": 2**64 - 1, "float": 1e30, "small": 3}
    for text in (codec.dumps(value), codec.dumps(value).encode()):
        assert codec.loads(text) == value
        assert type(codec.loads(text)["big"][0]) is int
    assert codec.copy(value) == value


def test_a_redis_record_written_before_the_marker_reads_back_exactly() -> None:
    """A record an earlier version wrote (its big integers in plain standard-library JSON)
    is read with orjson for speed, and again with the standard library when orjson's
    answer could have been such an integer."""
    import json

    import fakeredis

    from sources.redis import RedisStore
    store = RedisStore("redis://big", client=fakeredis.FakeRedis(), prefix="big:")
    assert store.swap("cid-1", None, {"id": "cid-1", "status": "running", "context": {"n": 1}}).ok
    store.client.hset(store._keys("cid-1")[0], "context", json.dumps({"account": BIG, "rate": 1e30}))
    assert store.get("cid-1")["context"] == {"account": BIG, "rate": 1e30}
    assert type(store.get("cid-1")["context"]["account"]) is int
