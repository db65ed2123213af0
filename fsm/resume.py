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

from .errors import InstanceError, UnknownInstance
from .handler import App
from .runtime import freshest_record, process


def resume(application: App, cid: str) -> str:
    wiring = application.wiring
    found = freshest_record(wiring, cid)
    if found and found[1].get("outbox") and \
            wiring.dispatcher.resend_outbox(wiring.stores[found[0]], found[1], force=True):
        wiring.metrics.flush()
        return f"re-sent its {len(found[1]['outbox'])} pending message(s)"
    checkpoint: Any = found[1].get("checkpoint") if found else None
    if not checkpoint and wiring.dispatcher.checkpoints is not None:
        checkpoint = wiring.dispatcher.checkpoints.get(cid)
    if not checkpoint:
        raise UnknownInstance(f"no checkpoint for instance {cid!r} (checkpoints are kept for messages read "
                              "from Kinesis; settings `checkpoint:` keeps them apart from the store)")
    from sources.pollers import read_at

    arn = checkpoint.get("arn") or ""
    if not arn.startswith("arn:aws:kinesis:") or not checkpoint.get("shard"):
        raise InstanceError(f"instance {cid!r} last consumed {arn or 'an unnamed source'!r}, which cannot be "
                            "replayed: `fsm resume` re-reads Kinesis streams only")
    body = read_at(arn, checkpoint["shard"], checkpoint["sequence"],
                   endpoint_url=application.settings.endpoints.get(arn), aws=application.settings.aws or None)
    outcome = process(wiring, body, {"arn": arn, "shard": checkpoint["shard"], "sequence": checkpoint["sequence"]})
    wiring.metrics.flush()
    return f"{outcome.result} ({outcome.status} in state {outcome.state})" if outcome else "dead-lettered"
