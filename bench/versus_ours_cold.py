"""One cold container of lambda-fsm, for bench/versus.py (part 1). Like
bench/versus_alf.py's ``cold`` mode, it imports only the standard library modules that
one does before the clock starts, so that both sides pay the same harness cost:

    python bench/versus_ours_cold.py QUEUE_ARN CID T0

imports ``fsm.handler`` (FSM_CONFIG and FSM_SETTINGS name the machines, the SQS queue and
the DynamoDB table), hands ``lambda_handler`` one SQS record whose body starts instance
CID, and prints one ``VERSUS_RESULT`` JSON line. T0 is the parent's ``time.time()`` just
before it started this process.
"""

import json
import sys
import time

from lambda_records import sqs_record

MARKER = "VERSUS_RESULT "


def cold(queue_arn, cid, parent_t0):
    ready = time.time()                      # the interpreter is up: nothing imported yet
    started = time.perf_counter()
    from fsm import handler
    imported = time.perf_counter()
    from fsm.message import Message  # loaded by the handler's import already

    body = Message(machine="cold", correlation_id=cid, context={}, sent_at=time.time()).encode()
    reply = handler.lambda_handler({"Records": [sqs_record(body, queue_arn)]})
    returned = time.time()
    handled = time.perf_counter()
    record = handler.app().wiring.stores[0].get(cid)      # not timed: did it commit step 1?
    print(MARKER + json.dumps({
        "interpreter_ms": (ready - parent_t0) * 1000, "import_ms": (imported - started) * 1000,
        "first_ms": (handled - imported) * 1000, "process_to_return_ms": (returned - parent_t0) * 1000,
        "ok": not reply.get("batchItemFailures") and bool(record) and record["step"] == 1, "logs": {}}),
        flush=True)


if __name__ == "__main__":
    cold(sys.argv[1], sys.argv[2], float(sys.argv[3]))
