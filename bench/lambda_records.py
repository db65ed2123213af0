"""Lambda event source records as the mappings deliver them (the shapes of tests/events/),
for the benchmarks. Standard library only: the cold-start scripts import it before
anything else, under either framework's interpreter."""

import base64
import time


def sqs_record(body, queue_arn):
    """An ``aws:sqs`` record (tests/events/sqs.json's shape)."""
    return {"messageId": "059f36b4-87a3-44ab-83d2-661975830a7d", "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3",
            "body": body, "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183",
                                         "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                                         "ApproximateFirstReceiveTimestamp": "1545082649185"},
            "messageAttributes": {}, "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3", "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn, "awsRegion": "us-east-1"}


def kinesis_record(data, stream_arn, sequence):
    """An ``aws:kinesis`` record, its data base64 (tests/events/kinesis.json's shape)."""
    return {"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "p", "sequenceNumber": str(sequence),
                        "data": base64.b64encode(data.encode("utf-8")).decode("ascii"),
                        "approximateArrivalTimestamp": time.time()},
            "eventSource": "aws:kinesis", "eventVersion": "1.0",
            "eventID": f"shardId-000000000000:{sequence}", "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/bench", "awsRegion": "us-east-1",
            "eventSourceARN": stream_arn}
