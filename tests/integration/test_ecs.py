"""``actions.ecs.RunTask`` against moto's ECS, and the task's end fed back through the
Lambda handler as the "ECS Task State Change" event EventBridge would deliver.

moto runs nothing: ``run_task`` records the task and each ``describe_tasks`` moves it one
status on, up to STOPPED. The tests read the task back (moto echoes the overrides and
``startedBy``, as ECS does), build the EventBridge event from it in ECS's real shape, and
give it to ``fsm.handler.handle_event``. Everything runs in moto's in-process mock and
the embedded runtime, with a fake clock for the timeouts: no server, no sleeping.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.ecs import (
    MAX_OVERRIDES_BYTES,
    RunTask,
    client_token,
    started_by,
    task_event_id,
)
from config.loader import load_file, load_text
from config.settings import Settings
from fsm.app import App
from fsm.app.intake import handle_event
from fsm.app.wiring import build
from fsm.client import Client
from fsm.container import ReportError, report
from sources.ecs import event_from_task_change

moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")

ROOT = Path(__file__).resolve().parents[2]
REGION, ACCOUNT = "us-east-1", "123456789012"
REPORTS_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:fsm-reports"

MACHINE = f"""
machines:
  - name: video
    states:
      - name: rendering
        initial: true
        timeout: 30
        do_action:
          class: actions.ecs.RunTask
          params:
            cluster: media
            task_definition: render
            launch_type: EC2
            report_to: {REPORTS_ARN}
            env_from_context: {{VIDEO: video}}
            overrides: {{containerOverrides: [{{name: render, command: [render, --fast]}}]}}
        transitions:
          - {{event: done, target: publishing}}
          - {{event: failed, target: broken}}
          - {{event: timeout, target: timed_out}}
      - name: publishing
        timeout: 30
        do_action: {{class: actions.ecs.RunTask, params: {{cluster: media, task_definition: publish}}}}
        transitions:
          - {{event: done, target: published}}
          - {{event: failed, target: broken}}
          - {{event: timeout, target: timed_out}}
      - {{name: published, final: true}}
      - {{name: broken, final: true}}
      - {{name: timed_out, final: true}}
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Ecs:
    """moto's ECS with a cluster, one EC2 container instance and two task definitions;
    ``requests`` holds the parameters of every RunTask call, as botocore sent them."""

    def __init__(self) -> None:
        self.client = boto3.client("ecs", region_name=REGION)
        self.requests: list[dict[str, Any]] = []
        self.client.meta.events.register("before-parameter-build.ecs.RunTask", self._record)
        self.client.create_cluster(clusterName="media")
        for family in ("render", "publish"):
            self.client.register_task_definition(family=family, containerDefinitions=[
                {"name": family, "image": f"example/{family}:1", "memory": 256, "essential": True}])
        # EC2 tasks need a registered container instance: an EC2 instance introduced by
        # its identity document, as the ECS agent would.
        ec2 = boto3.client("ec2", region_name=REGION)
        instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]
        document = {"instanceId": instance["InstanceId"], "region": REGION, "accountId": ACCOUNT,
                    "availabilityZone": instance["Placement"]["AvailabilityZone"]}
        self.client.register_container_instance(cluster="media", instanceIdentityDocument=json.dumps(document))

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.requests.append(json.loads(json.dumps(params)))

    def stopped(self, task_arn: str) -> dict[str, Any]:
        """The task after moto has walked it to STOPPED, as plain JSON."""
        for _ in range(10):
            task = self.client.describe_tasks(cluster="media", tasks=[task_arn])["tasks"][0]
            if task["lastStatus"] == "STOPPED":
                return json.loads(json.dumps(task, default=str))
        raise AssertionError(f"moto never stopped {task_arn}")


def task_change(task: dict[str, Any], exit_code: int | None, reason: str = "Essential container in task exited",
                event_id: str | None = None) -> dict[str, Any]:
    """The EventBridge event ECS sends when ``task`` stops (what moto leaves out filled in)."""
    detail = dict(task)
    detail.update(lastStatus="STOPPED", desiredStatus="STOPPED", stopCode="EssentialContainerExited",
                  stoppedReason=reason, version=3)
    detail["containers"] = [{**c, "lastStatus": "STOPPED", "exitCode": exit_code} for c in task["containers"]]
    if exit_code is None:
        detail["containers"] = [{k: v for k, v in c.items() if k != "exitCode"} for c in detail["containers"]]
    return {"version": "0", "id": event_id or str(uuid.uuid4()), "detail-type": "ECS Task State Change",
            "source": "aws.ecs", "account": ACCOUNT, "time": "2026-01-01T00:00:00Z", "region": REGION,
            "resources": [task["taskArn"]], "detail": detail}


@pytest.fixture
def ecs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ecs]:
    for name in ("FSM_STREAM", "FSM_SETTINGS", "FSM_ENDPOINTS", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with moto.mock_aws():
        yield Ecs()


def make_app(ecs: Ecs, text: str = MACHINE) -> App:
    definitions = load_text(text)
    for machine in definitions.machines.values():
        for state in machine.states.values():
            if isinstance(state.do_action, RunTask):
                state.do_action.client = ecs.client
    settings = Settings(store=["memory://"])
    return App(definitions, settings, build(definitions.machines, settings))


def environment(request: dict[str, Any], container: str) -> dict[str, str]:
    entry = next(o for o in request["overrides"]["containerOverrides"] if o["name"] == container)
    return {e["name"]: e["value"] for e in entry["environment"]}


def test_run_task_passes_the_instance_to_the_container_and_waits(ecs: Ecs) -> None:
    app = make_app(ecs)
    client = Client(wiring=app.wiring)
    cid = client.start("video", {"video": "cat.mp4"})
    status = client.status(cid)
    assert (status["state"], status["status"]) == ("rendering", "waiting")
    assert len(ecs.requests) == 1, "started exactly one task, and never polled it"
    sent = ecs.requests[0]
    assert sent["startedBy"] == started_by(cid) and len(sent["startedBy"]) <= 36
    assert sent["clientToken"] == client_token(task_event_id(cid, 0)) and len(sent["clientToken"]) <= 64
    assert [sent[k] for k in ("cluster", "taskDefinition", "launchType", "count")] == ["media", "render", "EC2", 1]

    task_arn = status["context"]["ecs_task_arn"]
    task = ecs.client.describe_tasks(cluster="media", tasks=[task_arn])["tasks"][0]
    assert task["startedBy"] == sent["startedBy"]
    env = environment(task, "render")   # echoed back by ECS: this is what the event carries
    assert env == {"FSM_CORRELATION_ID": cid, "FSM_STEP": "0", "FSM_MACHINE": "video",
                   "FSM_STATE": "rendering", "FSM_EVENT_ID": task_event_id(cid, 0),
                   "FSM_REPORT_TO": REPORTS_ARN, "VIDEO": "cat.mp4"}
    render = next(o for o in task["overrides"]["containerOverrides"] if o["name"] == "render")
    assert render["command"] == ["render", "--fast"], "the user's overrides are kept"


def test_exit_code_zero_moves_on_and_a_duplicate_event_is_applied_once(ecs: Ecs) -> None:
    app = make_app(ecs)
    client = Client(wiring=app.wiring)
    cid = client.start("video", {"video": "cat.mp4"})
    render_task = ecs.stopped(client.status(cid)["context"]["ecs_task_arn"])
    event = task_change(render_task, exit_code=0)

    assert handle_event(app, event) == {"sent": "done", "correlation_id": cid}
    status = client.status(cid)
    assert (status["state"], status["status"]) == ("publishing", "waiting")
    assert status["context"]["ecs_task_arn"] != render_task["taskArn"], "the publish task was started"
    assert environment(ecs.requests[-1], "publish")["FSM_STATE"] == "publishing"

    # EventBridge delivers at least once, and a redelivery may carry a new id: it reports
    # the render task, not the publish task now running, so it cannot finish the publish
    # step, which waits for the very same event name.
    assert handle_event(app, event) == {"ignored": True, "reason": "stale task"}
    assert handle_event(app, {**event, "id": str(uuid.uuid4())})["ignored"]
    status = client.status(cid)
    assert (status["state"], status["status"]) == ("publishing", "waiting")
    assert [h["event"] for h in client.history(cid)] == [None, "done"]

    publish_task = ecs.stopped(status["context"]["ecs_task_arn"])
    assert handle_event(app, task_change(publish_task, exit_code=0))["sent"] == "done"
    assert client.status(cid)["state"] == "published"


def test_a_non_zero_exit_code_is_the_failed_event_with_its_reason(ecs: Ecs) -> None:
    app = make_app(ecs)
    client = Client(wiring=app.wiring)
    cid = client.start("video", {"video": "cat.mp4"})
    task = ecs.stopped(client.status(cid)["context"]["ecs_task_arn"])

    assert handle_event(app, task_change(task, exit_code=1))["sent"] == "failed"
    status = client.status(cid)
    assert (status["state"], status["status"]) == ("broken", "done")
    assert status["context"]["exit_code"] == 1
    assert status["context"]["reason"] == "Essential container in task exited"
    assert status["context"]["task_arn"] == task["taskArn"]
    assert status["context"]["stop_code"] == "EssentialContainerExited"


def test_a_task_that_never_started_its_container_fails_with_ecs_reason(ecs: Ecs) -> None:
    app = make_app(ecs)
    client = Client(wiring=app.wiring)
    cid = client.start("video", {"video": "cat.mp4"})
    task = ecs.stopped(client.status(cid)["context"]["ecs_task_arn"])
    event = task_change(task, exit_code=None, reason="CannotPullContainerError: image not found")
    event["detail"]["stopCode"] = "TaskFailedToStart"

    assert handle_event(app, event)["sent"] == "failed"
    context = client.status(cid)["context"]
    assert (context["exit_code"], context["stop_code"]) == (None, "TaskFailedToStart")
    assert context["reason"].startswith("CannotPullContainerError")


def test_a_task_that_never_reports_is_caught_by_the_state_timeout(ecs: Ecs) -> None:
    app = make_app(ecs)
    client = Client(wiring=app.wiring)
    assert client.runtime is not None
    clock = FakeClock()
    client.runtime.clock = clock
    app.wiring.dispatcher.clock = clock
    cid = client.start("video", {"video": "cat.mp4"})
    task = ecs.stopped(client.status(cid)["context"]["ecs_task_arn"])

    clock.now += 29
    client.runtime.catch_up()
    assert client.status(cid)["status"] == "waiting"
    clock.now += 2
    client.runtime.catch_up()
    status = client.status(cid)
    assert (status["state"], status["status"]) == ("timed_out", "done")

    # The task's end, arriving after all, changes nothing and fails nothing.
    reply = handle_event(app, task_change(task, exit_code=0))
    assert reply["ignored"] is True and "done" in reply["reason"]
    assert client.status(cid)["state"] == "timed_out"


def test_the_container_report_and_the_ecs_event_dedupe_against_each_other(ecs: Ecs) -> None:
    """The container reports through the stream (an SQS queue here), the worker applies
    it; the task's STOPPED event then carries the same event id and is a duplicate."""
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="fsm-reports")["QueueUrl"]
    app = make_app(ecs)
    client = Client(wiring=app.wiring)
    cid = client.start("video", {"video": "cat.mp4"})
    task_arn = client.status(cid)["context"]["ecs_task_arn"]
    task = ecs.client.describe_tasks(cluster="media", tasks=[task_arn])["tasks"][0]

    # Inside the container: only the environment ECS gave it.
    event_id = report("done", {"frames": 1440}, environ=environment(task, "render"))
    assert event_id == task_event_id(cid, 0)
    message = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1)["Messages"][0]
    record = {"eventSource": "aws:sqs", "eventSourceARN": REPORTS_ARN, "messageId": message["MessageId"],
              "body": message["Body"]}
    assert handle_event(app, {"Records": [record]}) == {"batchItemFailures": []}
    status = client.status(cid)
    assert (status["state"], status["context"]["frames"]) == ("publishing", 1440)

    handle_event(app, task_change(ecs.stopped(task_arn), exit_code=0))
    assert client.status(cid)["state"] == "publishing", "the ECS event of the same task was applied again"
    assert [h["event"] for h in client.history(cid)] == [None, "done"]


def test_report_outside_a_task_says_what_is_missing() -> None:
    with pytest.raises(ReportError, match="FSM_CORRELATION_ID.*started by actions.ecs.RunTask"):
        report("done", environ={})
    env = {"FSM_CORRELATION_ID": "abc", "FSM_MACHINE": "video", "FSM_REPORT_TO": ""}
    with pytest.raises(ReportError, match="FSM_REPORT_TO.*embedded runtime"):
        report("done", environ=env)


def test_overrides_above_8_kb_fail_the_instance_with_a_way_out(ecs: Ecs) -> None:
    app = make_app(ecs)
    client = Client(wiring=app.wiring)
    cid = client.start("video", {"video": "x" * MAX_OVERRIDES_BYTES})
    status = client.status(cid)
    assert status["status"] == "failed" and status["retries"] == 1, "retrying cannot shrink them"
    assert "8192" in status["last_error"] and "fsm status" in status["last_error"]
    assert ecs.requests == []


def test_a_rerun_of_the_same_step_asks_ecs_for_the_same_task(ecs: Ecs) -> None:
    """A retry or a takeover after a crash runs the step again under a new fence: the
    request, client token included, must not change, so ECS starts one task."""
    from fsm import Context

    machine = load_text(MACHINE).machines["video"]
    action = machine.states["rendering"].do_action
    assert isinstance(action, RunTask)
    action.client = ecs.client
    for fence in (4, 5):
        context = Context({"video": "cat.mp4"}, correlation_id="order-1", machine=machine, steps=0,
                          current_state=machine.states["rendering"])
        assert action.execute(context, {"fence_token": fence}) is None
    first, second = ecs.requests
    assert first == second and first["clientToken"] == client_token(task_event_id("order-1", 0))


def test_the_container_defaults_to_the_first_essential_one_asked_once(ecs: Ecs) -> None:
    ecs.client.register_task_definition(family="sidecar", containerDefinitions=[
        {"name": "log-router", "image": "fluent-bit", "memory": 64, "essential": False},
        {"name": "worker", "image": "example/worker", "memory": 256}])
    calls: list[str] = []
    ecs.client.meta.events.register("before-call.ecs.DescribeTaskDefinition",
                                    lambda **kw: calls.append("describe"))
    action = RunTask("run", {"cluster": "media", "task_definition": "sidecar", "client": ecs.client})
    assert action.container_name() == "worker" and action.container_name() == "worker"
    assert calls == ["describe"]


def test_without_an_injected_client_one_is_built_once_on_first_use(ecs: Ecs) -> None:
    action = RunTask("run", {"cluster": "media", "task_definition": "render", "region": REGION})
    assert action.container_name() == "render"
    assert action.ecs() is action.ecs() and action.ecs() is not ecs.client


@pytest.mark.parametrize("params, message", [
    ({"cluster": "media"}, "'task_definition'.* required"),
    ({"cluster": "media", "task_definition": "render", "timeout": 60}, "declare `timeout: SECONDS` on the state"),
    ({"cluster": "media", "task_definition": "render", "clustr": "x"}, "unknown params \\['clustr'\\]"),
    ({"cluster": "media", "task_definition": "render", "overrides": ["x"]}, "'overrides' must be a mapping"),
])
def test_bad_params_are_reported_where_the_machine_is_defined(params: dict[str, Any], message: str) -> None:
    text = ("machines:\n  - name: m\n    states:\n      - name: a\n        initial: true\n"
            f"        do_action: {{class: actions.ecs.RunTask, params: {json.dumps(params)}}}\n"
            "        transitions: [{event: done, target: b}]\n      - {name: b, final: true}\n")
    from fsm.errors import InvalidDefinition

    with pytest.raises(InvalidDefinition, match=f"<string>:6: .*{message}"):
        load_text(text)


def test_only_stopped_tasks_started_by_run_task_are_events() -> None:
    env = [{"name": "FSM_CORRELATION_ID", "value": "order-1"}, {"name": "FSM_EVENT_ID", "value": "task:order-1:3"}]
    detail = {"lastStatus": "STOPPED", "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/1",
              "stoppedReason": "Essential container in task exited", "stopCode": "EssentialContainerExited",
              "overrides": {"containerOverrides": [{"name": "job", "environment": env}]},
              "containers": [{"name": "sidecar", "exitCode": 137}, {"name": "job", "exitCode": 0}]}
    event = {"detail-type": "ECS Task State Change", "source": "aws.ecs", "detail": detail}
    assert event_from_task_change(event) == ("order-1", "done", {"exit_code": 0, "task_arn": detail["taskArn"]},
                                             "task:order-1:3")
    running = {**event, "detail": {**detail, "lastStatus": "RUNNING"}}
    assert event_from_task_change(running) is None
    foreign = {**event, "detail": {**detail, "overrides": {"containerOverrides": [{"name": "job"}]}}}
    assert event_from_task_change(foreign) is None
    malformed = [{"name": "FSM_CORRELATION_ID", "value": "no spaces allowed"}]
    overrides = {"containerOverrides": [{"name": "job", "environment": malformed}]}
    bad = {**event, "detail": {**detail, "overrides": overrides}}
    assert event_from_task_change(bad) is None


def test_the_example_machine_loads() -> None:
    definitions = load_file(ROOT / "examples" / "ecs" / "fsm.yaml")
    assert all(isinstance(s.do_action, RunTask) for s in definitions.machines["thumbnails"].states.values()
               if s.do_action is not None)
