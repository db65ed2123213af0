"""``fsm resume ID``: get a stuck instance going again.

An instance whose record still owes messages (its outbox) gets copies of them sent
again: they were lost on the way (a deleted queue, say), and copies of messages that
were not lost are recognised as duplicates. Otherwise it continues from its last
Kinesis checkpoint.

The record at the checkpoint is the message the instance last consumed, and it carries
the context, so dispatching it again rebuilds a lost store record (the dispatcher takes a
message whose record is missing as the truth) or, if the record is intact, is recognised
as a duplicate that re-sends the outbox.
"""

from __future__ import annotations

from typing import Any

from ..errors import InstanceError, UnknownInstance
from ..record import Status
from .delivery import freshest_record, process
from .wiring import App


def resume(application: App, cid: str) -> str:
    wiring = application.wiring
    found = freshest_record(wiring, cid)
    if found and found[1].get("outbox") and \
            wiring.dispatcher.resend_outbox(wiring.stores[found[0]], found[1], force=True):
        wiring.metrics.flush()
        sent = f"re-sent its {len(found[1]['outbox'])} pending message(s)"
        if wiring.embedded:  # nothing else runs it here: run it now
            from .local import LocalRuntime

            record = LocalRuntime(wiring).drive(cid) or found[1]
            sent += f"; now {record['status']} in state {record['state']}"
        return sent
    checkpoint: Any = found[1].get("checkpoint") if found else None
    if not checkpoint and wiring.dispatcher.checkpoints is not None:
        checkpoint = wiring.dispatcher.checkpoints.get(cid)
    if not checkpoint:
        if found is None:
            raise UnknownInstance(f"no instance {cid!r} in {', '.join(s.url for s in wiring.stores)}")
        record = found[1]
        if record["status"] != Status.RUNNING:
            return f"nothing to resume: it is {record['status']} in state {record['state']}"
        raise InstanceError(f"instance {cid!r} is running and owes no message that can be sent again "
                            "(its lease holder is still working on it, until the lease expires)")
    from sources.kinesis import read_at

    arn = checkpoint.get("arn") or ""
    if not arn.startswith("arn:aws:kinesis:") or not checkpoint.get("shard"):
        raise InstanceError(f"instance {cid!r} last consumed {arn or 'an unnamed source'!r}, which cannot be "
                            "replayed: `fsm resume` re-reads Kinesis streams only")
    body = read_at(arn, checkpoint["shard"], checkpoint["sequence"],
                   endpoint_url=application.settings.endpoints.get(arn), aws=application.settings.aws or None)
    outcome = process(wiring, body, {"arn": arn, "shard": checkpoint["shard"], "sequence": checkpoint["sequence"]})
    wiring.metrics.flush()
    return f"{outcome.result} ({outcome.status} in state {outcome.state})" if outcome else "dead-lettered"
