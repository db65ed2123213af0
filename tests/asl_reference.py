"""Run Amazon States Language definitions on moto's Step Functions executor (the reference).

moto (>= 5.0) ships the interpreter LocalStack wrote (``moto/stepfunctions/parser``). It only
runs definitions when the mock is configured with
``config={"stepfunctions": {"execute_state_machine": True}}``; otherwise ``start_execution``
merely records the execution (and ``SF_EXECUTION_HISTORY_TYPE`` fakes an outcome). Each
execution runs on its own thread; ``describe_execution`` reports RUNNING until it ends.

Limits of the reference worth knowing (moto 5.x): Wait states really sleep, and so do Retry
intervals (with BackoffRate and JitterStrategy), so keep those to zero or a second. Task states
call the mocked AWS services (a Lambda task would need a mocked function with Docker), so the
corpus uses none.

    run_reference(definition, input)          -> {"status": ..., "output" | "error"/"cause": ...}
    run_reference_many([(definition, input)]) -> [the same, one per pair], in one mock context
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import time
from collections.abc import Iterable
from typing import Any

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/x"
TIMEOUT = 30.0  # seconds, per execution


def _client():
    import boto3

    return boto3.client(
        "stepfunctions",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _outcome(desc: dict) -> dict:
    status = desc["status"]
    if status == "SUCCEEDED":
        return {"status": status, "output": _output(desc)}
    out: dict[str, Any] = {"status": status}
    if "error" in desc:
        out["error"] = desc["error"]
    if "cause" in desc:
        out["cause"] = desc["cause"]
    return out


def _output(desc: dict) -> Any:
    """The execution's output as a JSON value.

    moto's DescribeExecution writes an output that is a JSON string without quotes (it takes
    any ``str`` output for JSON text already), so a string output "12" would read back as the
    number 12. Take the value from moto's execution object instead, and fall back on the text.
    """
    try:
        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        backend = stepfunctions_parser_backends[desc["executionArn"].split(":")[4]][REGION]
        return copy.deepcopy(backend.describe_execution(desc["executionArn"]).output)
    except (ImportError, LookupError, AttributeError):  # another moto layout
        raw = desc.get("output")
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw


def _run_one(sfn: Any, i: int, definition: Any, data: Any, timeout: float) -> dict:
    import botocore.exceptions

    text = definition if isinstance(definition, str) else json.dumps(definition)
    try:
        arn = sfn.create_state_machine(name=f"m{i}", definition=text,
                                       roleArn=ROLE_ARN)["stateMachineArn"]
    except botocore.exceptions.ClientError as exc:  # moto's InvalidDefinition has no code
        return {"status": "INVALID_DEFINITION",
                "error": exc.response["Error"].get("Message", str(exc))}
    try:
        try:
            exec_arn = sfn.start_execution(stateMachineArn=arn, name=f"e{i}",
                                           input=json.dumps(data))["executionArn"]
        except botocore.exceptions.ClientError as exc:
            return {"status": "NOT_STARTED", "error": exc.response["Error"].get("Message", str(exc))}
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            desc = sfn.describe_execution(executionArn=exec_arn)
            if desc["status"] != "RUNNING":
                return _outcome(desc)
            if time.monotonic() > deadline:
                return {"status": "RUNNING"}
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    finally:
        # moto's start_execution deep-copies the state machine, and with it the backend and
        # every other machine's executions, whose worker threads hold uncopyable locks: so run
        # one execution at a time and forget each machine once its execution has ended.
        sfn.delete_state_machine(stateMachineArn=arn)


@contextlib.contextmanager
def _cached_jsonpath_parsers():
    """Memoise jsonpath_ng's ``parse`` where moto's interpreter imported it.

    jsonpath_ng builds its LALR tables anew for every ``parse`` call (about 0.1 s each), and
    moto parses every path each time a state evaluates it; caching the parsed (immutable)
    expressions by their text changes nothing but the speed.
    """
    import importlib

    patched = []
    for modname in ("moto.stepfunctions.parser.asl.utils.json_path",
                    "moto.stepfunctions.parser.asl.component.common.path.result_path"):
        try:
            mod = importlib.import_module(modname)
        except ImportError:  # another moto layout: run uncached
            continue
        original = getattr(mod, "parse", None)
        if original is None or hasattr(original, "cache_info"):
            continue
        mod.parse = functools.lru_cache(maxsize=4096)(original)
        patched.append((mod, original))
    try:
        yield
    finally:
        for mod, original in patched:
            mod.parse = original


def run_reference_many(runs: Iterable[tuple[Any, Any]], timeout: float = TIMEOUT) -> list[dict]:
    """Run every (definition, input) pair on moto, all in one ``mock_aws`` context.

    The executions run one after another (see ``_run_one``), so Waits and Retry intervals add
    up. A definition moto rejects gives ``{"status": "INVALID_DEFINITION", "error": <message>}``,
    an input it refuses ``{"status": "NOT_STARTED", ...}``, and an execution still running after
    ``timeout`` seconds ``{"status": "RUNNING"}``. moto's interpreter logs (and prints parser
    complaints) on stderr as it goes.
    """
    from moto import mock_aws

    runs = list(runs)
    results: list[dict | None] = [None] * len(runs)
    # moto never calls AWS, but boto3 still wants credentials and a region to sign with.
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION=REGION)
    try:
        with _cached_jsonpath_parsers(), \
                mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
            sfn = _client()
            for i, (definition, data) in enumerate(runs):
                results[i] = _run_one(sfn, i, definition, data, timeout)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return results  # type: ignore[return-value]


def run_reference(definition: Any, data: Any = None, timeout: float = TIMEOUT) -> dict:
    """Run one definition with one input on moto; see ``run_reference_many``."""
    return run_reference_many([(definition, {} if data is None else data)], timeout)[0]


if __name__ == "__main__":  # python tests/asl_reference.py DEF.json [INPUT-JSON]
    import sys

    with open(sys.argv[1]) as fh:
        doc = json.load(fh)
    if "definition" in doc:  # a corpus file: run its cases
        defn = doc["definition"]
        for case, res in zip(doc["cases"], run_reference_many(
                (defn, c["input"]) for c in doc["cases"])):
            print(case["name"], json.dumps(res))
    else:
        print(json.dumps(run_reference(doc, json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})))
