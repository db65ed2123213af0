"""A context no configured backend can hold fails the instance at once, naming the size,
the limit and the backend: never a commit the store refuses and a message redelivered
for ever (a DynamoDB item is 400 KB, an SQS message 256 KB)."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

from config.loader import load_file
from config.settings import load_settings
from fsm.app.client import Client
from fsm.app.wiring import build
from fsm.payloads import Limits
from sources.registry import size_limit

ACTIONS = '''
from fsm import Action

class Grow(Action):
    def execute(self, context, obj):
        context["blob"] = "x" * self.params["bytes"]
        return "grown"
'''


def client(tmp_path: Path, size: int, **settings: object) -> Client:
    module = f"grow_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(ACTIONS)
    (tmp_path / "fsm.yaml").write_text(textwrap.dedent(f"""
        machines:
          - name: grow
            states:
              - name: small
                initial: true
                do_action: {{class: {module}.Grow, params: {{bytes: {size}}}}}
                transitions: [{{event: grown, target: big}}]
              - {{name: big, final: true}}
    """))
    definitions = load_file(tmp_path / "fsm.yaml")
    wiring = build(definitions.machines, load_settings({"store": f"sqlite:///{tmp_path}/s.sqlite3", **settings}))
    return Client(wiring=wiring)


def test_the_limits_are_the_services_own() -> None:
    assert size_limit(["arn:aws:dynamodb:us-east-1:1:table/t"]) == 400 * 1024
    assert size_limit(["arn:aws:sqs:us-east-1:1:q", "arn:aws:kinesis:us-east-1:1:stream/s"]) == 256 * 1024
    assert size_limit(["redis://127.0.0.1:6379/0", "sqlite:///x"]) == 0


def test_a_context_that_fits_the_store_is_committed(tmp_path: Path) -> None:
    c = client(tmp_path, 300 * 1024)
    c.wiring.dispatcher.payloads.limits = Limits(
        record=400 * 1024, record_names=("arn:aws:dynamodb:us-east-1:1:table/t",))
    cid = c.start("grow")
    status = c.status(cid)
    assert status["status"] == "done" and len(status["context"]["blob"]) == 300 * 1024


def test_one_too_large_for_a_record_fails_at_once_with_the_numbers(tmp_path: Path) -> None:
    c = client(tmp_path, 500 * 1024)
    c.wiring.dispatcher.payloads.limits = Limits(
        record=400 * 1024, record_names=("arn:aws:dynamodb:us-east-1:1:table/t",))
    cid = c.start("grow")
    status = c.status(cid)
    assert status["status"] == "failed" and status["retries"] == 1  # once: no retry can help
    assert status["last_error"].startswith("PayloadTooLarge: the context is 512,011 bytes; a record on "
                                           "arn:aws:dynamodb:us-east-1:1:table/t holds at most 409,600 bytes")
    assert "blob" not in status["context"]


def test_a_next_message_too_large_for_the_stream_fails_before_the_send(tmp_path: Path) -> None:
    c = client(tmp_path, 300 * 1024)
    c.wiring.dispatcher.payloads.limits = Limits(
        message=256 * 1024, message_names=("arn:aws:sqs:us-east-1:1:q",))
    cid = c.start("grow")
    status = c.status(cid)
    assert status["status"] == "failed"
    assert "a message on arn:aws:sqs:us-east-1:1:q holds at most 262,144 bytes" in status["last_error"]


def test_without_limits_a_large_context_is_fine(tmp_path: Path) -> None:
    c = client(tmp_path, 2 * 1024 * 1024)
    cid = c.start("grow")
    assert c.status(cid)["status"] == "done"
