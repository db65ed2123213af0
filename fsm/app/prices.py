"""AWS list prices, per region, for ``fsm cost``: the one place they are written down.

Source: the public pricing pages (aws.amazon.com/dynamodb/pricing/on-demand/,
/sqs/pricing/, /sns/pricing/, /kinesis/data-streams/pricing/, /s3/pricing/,
/lambda/pricing/, /cloudwatch/pricing/, /eventbridge/pricing/,
/secrets-manager/pricing/), as listed in PRICES_AS_OF, written down by hand (this
machine cannot read them). The us-east-1 DynamoDB, SQS and Lambda figures are the ones
the lean-transitions issue measured with (DynamoDB after the November 2024 on-demand
price cut). us-east-2 and us-west-2 list the same prices for every item here. eu-west-1
differs for DynamoDB (the pre-cut $1.4135 and $0.283 per million, halved) and CloudWatch
Logs; its Kinesis figure is the least certain. Prices change: check the pages before
quoting a figure, and add a region by copying one and editing it.

Only per-request prices are here. What a deployment pays whatever its traffic (Kinesis
shard-hours, storage, custom metrics per month, free tiers) is not per transition, and
``fsm cost`` leaves it out and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PRICES_AS_OF = "2025 (written down 2026-11)"
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Prices:
    """US dollars per one unit of each billed quantity."""

    dynamodb_write_unit: float      # one on-demand write request unit (1 KB; a transactional write is 2)
    dynamodb_read_unit: float       # one on-demand read request unit (4 KB strongly consistent, 8 KB eventual)
    sqs_request: float              # standard queue, per 64 KB chunk of a request
    sqs_fifo_request: float
    sns_request: float              # standard topic publish, per 64 KB chunk
    kinesis_put_unit: float         # provisioned mode PUT payload unit (25 KB of a record)
    eventbridge_event: float        # custom event put on a bus, per 64 KB chunk
    s3_put_request: float           # PUT, COPY, POST, LIST (S3 Standard)
    s3_get_request: float           # GET, SELECT and the other requests
    lambda_request: float
    lambda_gb_second: float         # x86; arm64 is about 20% less
    cloudwatch_put_metric_request: float    # PutMetricData, per request
    cloudwatch_logs_ingested_gb: float      # standard log class: what EMF lines cost
    secrets_manager_request: float


_US = Prices(
    dynamodb_write_unit=0.625 / 1e6,
    dynamodb_read_unit=0.125 / 1e6,
    sqs_request=0.40 / 1e6,
    sqs_fifo_request=0.50 / 1e6,
    sns_request=0.50 / 1e6,
    kinesis_put_unit=0.014 / 1e6,
    eventbridge_event=1.00 / 1e6,
    s3_put_request=0.005 / 1e3,
    s3_get_request=0.0004 / 1e3,
    lambda_request=0.20 / 1e6,
    lambda_gb_second=0.0000166667,
    cloudwatch_put_metric_request=0.01 / 1e3,
    cloudwatch_logs_ingested_gb=0.50,
    secrets_manager_request=0.05 / 1e4,
)

REGIONS: dict[str, Prices] = {
    "us-east-1": _US,
    "us-east-2": _US,
    "us-west-2": _US,
    "eu-west-1": replace(_US, dynamodb_write_unit=0.7068 / 1e6, dynamodb_read_unit=0.1415 / 1e6,
                         cloudwatch_logs_ingested_gb=0.57),
}

# Comparison points quoted beside the result (per million state transitions / requests).
STEP_FUNCTIONS_STANDARD_PER_MILLION = 25.00       # us-east-1, $0.025 per 1,000 state transitions
STEP_FUNCTIONS_EXPRESS_PER_MILLION_REQUESTS = 1.00   # us-east-1, plus duration (GB-s) per execution


class UnknownRegion(ValueError):
    pass


def prices_for(region: str) -> Prices:
    try:
        return REGIONS[region]
    except KeyError:
        raise UnknownRegion(f"no price table for region {region!r} (known: {', '.join(sorted(REGIONS))}; "
                            "add one in fsm/app/prices.py)") from None
