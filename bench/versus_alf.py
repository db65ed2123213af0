"""The aws-lambda-fsm 0.35 side of bench/versus.py. Runs under aws-lambda-fsm's own
interpreter (a separate virtualenv, by default ``/tmp/alf-venv``), never under ours.

Nothing of aws-lambda-fsm is copied here: this file only writes its settings and
machines, calls its ``aws_lambda_fsm.handler.lambda_handler`` and reads what it sent. It
imports only the standard library at the top, so that the cold start measures
aws-lambda-fsm's imports and nothing of the harness.

Two modes (the parent, bench/versus.py, starts them and reads one ``VERSUS_RESULT``
JSON line per answer):

``cold QUEUE_ARN CID T0``
    One cold container: import the handler (settings.py and fsm.yaml are in the current
    folder), hand it one SQS record whose body starts instance CID, report the times.
    T0 is the parent's ``time.time()`` just before it started this process.

``worker``
    A warm container on redis: reads commands from stdin, one per line
    (``run N`` runs N instances of the 10-state machine through the handler, one Kinesis
    record per transition; ``quit`` ends), answers with the milliseconds of each call.
"""

import json
import logging
import sys
import time

from lambda_records import kinesis_record, sqs_record

MARKER = "VERSUS_RESULT "


class Counting(logging.Handler):
    """Counts aws-lambda-fsm's log records instead of writing them (a log line per
    transition would be I/O the harness adds, not the framework)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen = {}

    def emit(self, record):
        key = f"{record.levelname}: {record.getMessage()[:120]}"
        self.seen[key] = self.seen.get(key, 0) + 1


def quiet_logs():
    handler = Counting()
    log = logging.getLogger("aws_lambda_fsm")
    log.addHandler(handler)
    log.propagate = False
    return handler


def start_payload(machine, cid, context):
    """The first message, as aws_lambda_fsm.client.start_state_machine builds it."""
    return json.dumps({"version": "0.1", "user_context": context, "system_context": {
        "started_at": int(time.time()), "machine_name": machine, "current_state": "pseudo_init",
        "current_event": "pseudo_init", "steps": 0, "retries": 0, "correlation_id": cid,
        "additional_delay_seconds": 0}}, sort_keys=True)


# -- cold start ---------------------------------------------------------------------------


def cold(queue_arn, cid, parent_t0):
    ready = time.time()                      # the interpreter is up: nothing imported yet
    logs = quiet_logs()
    started = time.perf_counter()
    from aws_lambda_fsm import handler
    imported = time.perf_counter()
    event = {"Records": [sqs_record(start_payload("cold", cid, {}), queue_arn)]}
    handler.lambda_handler(event, None)
    returned = time.time()
    handled = time.perf_counter()

    # Not timed: did the first transition happen? Its next message must be on the queue.
    import settings

    from aws_lambda_fsm.aws import get_connection

    sqs = get_connection(queue_arn)
    url = settings.SQS_URLS[queue_arn]["QueueUrl"]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    sent = [json.loads(m["Body"])["system_context"] for m in got]
    ok = any(s["correlation_id"] == cid and s["steps"] == 1 and s["current_state"] == "a" for s in sent)
    print(MARKER + json.dumps({
        "interpreter_ms": (ready - parent_t0) * 1000, "import_ms": (imported - started) * 1000,
        "first_ms": (handled - imported) * 1000, "process_to_return_ms": (returned - parent_t0) * 1000,
        "ok": ok, "logs": logs.seen}), flush=True)


# -- warm transitions on redis --------------------------------------------------------------


class Sink:
    """Stands in for the boto3 Kinesis client: keeps what ``put_record`` is given. It is
    put in aws-lambda-fsm's own connection cache, so its send path runs unchanged up to
    the network call, which this replaces (as our side's in-process bus does)."""

    def __init__(self):
        self.sent = []
        self.sequence = 0

    def put_record(self, StreamName, Data, PartitionKey):
        self.sequence += 1
        self.sent.append(Data)
        return {"ShardId": "shardId-000000000000", "SequenceNumber": str(self.sequence)}


def worker():
    logs = quiet_logs()
    import settings

    from aws_lambda_fsm import aws, handler

    stream = settings.PRIMARY_STREAM_SOURCE
    sink = Sink()
    setattr(aws._local, "connection_to_" + stream, sink)   # its cache of boto3 clients, by ARN
    with open("context.json") as file:
        context = json.load(file)
    run = 0
    sequence = 0
    print(MARKER + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        times, cpu, failures, largest = [], [], [], 0
        for _ in range(int(words[1])):
            run += 1
            cid = f"alf-{time.time_ns()}-{run}"
            body = start_payload("linear", cid, context)
            calls = 0
            while body is not None:
                sequence += 1
                largest = max(largest, len(body))
                event = {"Records": [kinesis_record(body, stream, sequence)]}
                begun, begun_cpu = time.perf_counter(), time.process_time()
                handler.lambda_handler(event, None)
                times.append((time.perf_counter() - begun) * 1000)
                cpu.append((time.process_time() - begun_cpu) * 1000)
                calls += 1
                body = sink.sent.pop() if sink.sent else None
                if calls > 20:
                    break
            # Not timed: the last message entered s9 (final), ten transitions in all.
            if calls != 10:
                failures.append(f"{cid}: {calls} handler calls, expected 10")
        print(MARKER + json.dumps({"times": times, "cpu": cpu, "failures": failures, "logs": logs.seen,
                                   "message_bytes": largest}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "cold":
        cold(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        worker()
