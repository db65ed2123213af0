"""moto_server for the soak, with two costs of moto's SQS taken out (same behaviour).

moto 5's SQS is slow in proportion to the depth of the queue, on every message:

- ``receive_message`` checks each message it hands out against the queue's retention
  period through ``get_queue_attributes``, which builds every attribute of the queue
  three times over, ``ApproximateNumberOfMessages*`` included: three walks over all the
  queue's messages each, per message received;
- ``send_message`` reads ``queue.attributes`` (the same walks) for one flag;
- each walk asks every message ``visible`` / ``delayed``, which take the time through
  naive-UTC datetime arithmetic (``unix_time``): some 20 microseconds a message.

At 300 instances (about 300 messages in a queue) one ReceiveMessage of 10 took ~0.6 s of
moto's only core and a SendMessageBatch ~0.2 s: the soak made 2-3 transitions/s, with
moto's SQS the bottleneck and DynamoDB idle half the time. Here the retention check reads
the queue's period directly and ``unix_time()`` without an argument is ``time.time()``
(the value ``datetime.now(UTC) - epoch`` gives, to the microsecond); nothing else changes.

    python bench/soak_moto.py -H 127.0.0.1 -p 5000      # moto_server's own arguments
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def patch() -> None:
    """Apply both changes to the moto imported in this process."""
    from moto.sqs import models

    original = models.unix_time

    def unix_time(dt: Any = None) -> float:
        return time.time() if dt is None else original(dt)

    def unix_time_millis(dt: Any = None) -> float:
        return unix_time(dt) * 1000.0

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention_period = self.get_queue(queue_name).message_retention_period
        return bool(float(retention_period) + message.sent_timestamp / 1000 > unix_time())

    models.unix_time, models.unix_time_millis = unix_time, unix_time_millis
    models.SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period


def start(port: int, log_dir: Path) -> tuple[str, Any]:
    """This moto_server on ``port`` (the soak's starter: see ``bench/servers.py``)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    from servers import Process, http_200

    url = f"http://127.0.0.1:{port}"
    process = Process("moto_server (soak_moto)", [sys.executable, str(Path(__file__).resolve()), "-H", "127.0.0.1",
                                                 "-p", str(port)],
                      lambda: http_200(f"{url}/moto-api/"), log_dir / f"moto-{port}.log")
    return url, process


def main(argv: list[str] | None = None) -> None:
    patch()
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
