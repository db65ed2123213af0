"""The claim check: contexts and event data above ``offload.threshold`` live in the
payload store (S3; moto here) and records and messages carry a reference."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from config.loader import load_file
from config.settings import load_settings
from fsm.app.client import Client
from fsm.app.wiring import build
from fsm.errors import BackendError, InvalidDefinition

ACTIONS = '''
from fsm import Action

class Grow(Action):
    def execute(self, context, obj):
        context["blob"] = "x" * self.params["bytes"]
        return None

class Shrink(Action):
    def execute(self, context, obj):
        context["seen"] = len(context.pop("blob", "")) + len(context.get("note", ""))
        context.pop("note", None)
'''


def client(tmp_path: Path, **settings: object) -> Client:
    module = f"offl_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(ACTIONS)
    (tmp_path / "fsm.yaml").write_text(textwrap.dedent(f"""
        machines:
          - name: big
            states:
              - name: grow
                initial: true
                do_action: {{class: {module}.Grow, params: {{bytes: 500000}}}}
                transitions: [{{event: SHRINK, target: small, action: {module}.Shrink}}]
              - {{name: small, final: true}}
    """))
    definitions = load_file(tmp_path / "fsm.yaml")
    return Client(wiring=build(definitions.machines,
                               load_settings({"store": f"sqlite:///{tmp_path}/s.sqlite3", **settings})))


@mock_aws
def test_a_large_context_and_event_data_live_in_s3_and_the_record_holds_a_reference(tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="payloads")
    c = client(tmp_path, offload={"store": "s3://payloads/fsm", "threshold": 10_000})
    cid = c.start("big")
    record = c.wiring.stores[0].get(cid)
    reference = record["context"]
    assert set(reference) == {"$offload", "bytes", "sha256"} and reference["bytes"] > 500_000
    assert reference["$offload"].startswith(f"s3://payloads/fsm/{cid}/1-context-")
    assert len(json.dumps(record)) < 5_000  # the record stays small
    assert len(c.status(cid)["context"]["blob"]) == 500_000  # status shows the context itself
    c.send_event(cid, "SHRINK", {"note": "y" * 20_000})
    status = c.status(cid)
    assert status["status"] == "done" and status["context"] == {"seen": 520_000}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="payloads", Prefix=f"fsm/{cid}/")["Contents"]]
    assert any("/event-" in k for k in keys) and any("/1-context-" in k for k in keys)


@mock_aws
def test_below_the_threshold_nothing_is_offloaded(tmp_path: Path) -> None:
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="payloads")
    c = client(tmp_path, offload={"store": "s3://payloads/fsm", "threshold": 10_000_000})
    cid = c.start("big")
    assert len(c.wiring.stores[0].get(cid)["context"]["blob"]) == 500_000


def test_a_reference_whose_object_changed_is_refused(tmp_path: Path) -> None:
    c = client(tmp_path, offload={"store": "memory://", "threshold": 1000})
    cid = c.start("big")
    store = c.wiring.dispatcher.payloads.offload.store
    url = c.wiring.stores[0].get(cid)["context"]["$offload"]
    assert url.startswith(f"memory://{cid}/1-context-")
    store.objects[url] = b'{"blob": "tampered"}'
    with pytest.raises(BackendError, match="digest differs"):
        c.send_event(cid, "SHRINK")
    assert c.wiring.stores[0].get(cid)["state"] == "grow"  # nothing applied from the wrong payload


@pytest.mark.parametrize("value, words", [
    ({"store": "ftp://x"}, "offload.store must be s3://BUCKET/PREFIX"),
    ({"store": "s3://b", "threshold": -1}, "offload.threshold must be a whole number of bytes"),
    ({"store": "s3://b", "limit": 3}, "unknown key(s) limit"),
])
def test_bad_offload_settings_are_named(value: dict, words: str) -> None:
    with pytest.raises(InvalidDefinition) as caught:
        load_settings({"offload": value})
    assert words in str(caught.value)


@mock_aws
def test_create_resources_makes_the_bucket_with_the_retention_rule() -> None:
    from fsm.app.resources import create_resources

    settings = load_settings({"offload": {"store": "s3://payloads/fsm"}, "history_retention_days": 30,
                              "store": "memory://"})
    lines = list(create_resources(settings))
    assert "s3      s3://payloads/fsm (objects expire after 30 days)" in lines
    rules = boto3.client("s3", region_name="us-east-1").get_bucket_lifecycle_configuration(Bucket="payloads")
    assert rules["Rules"][0]["Expiration"]["Days"] == 30 and rules["Rules"][0]["Filter"]["Prefix"] == "fsm/"
