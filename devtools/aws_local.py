"""SQS and DynamoDB on loopback: moto in server mode (the registries have no real SQS or DynamoDB Local that runs
without Java), plus the jobs queue, its dead-letter queue and the jobs table shaped as template.yaml makes them."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import boto3

from devtools.procs import LOOPBACK, LoopbackServer, ManagedProcess, free_port

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient


class MotoServer(LoopbackServer):
    """``moto_server`` on ``http://127.0.0.1:<port>``, its DynamoDB transactions isolated as DynamoDB's are;
    ``with MotoServer(log_path) as moto:`` or start/stop."""

    def __init__(self, log_path: Path, *, port: int | None = None, region: str = "us-east-1", startup_timeout: float = 30.0) -> None:
        self.log_path = log_path
        self._port = port or free_port()
        self.region = region
        self.startup_timeout = startup_timeout
        self._process: ManagedProcess | None = None

    @property
    def port(self) -> int:
        return self._port

    def env(self) -> dict[str, str]:
        """What a function (or SDK client) needs to use this server for SQS and DynamoDB."""
        return {"AWS_ENDPOINT_URL_SQS": self.endpoint_url, "AWS_ENDPOINT_URL_DYNAMODB": self.endpoint_url}

    def client(self, service: str) -> Any:
        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="moto",
            aws_secret_access_key="moto",
        )

    def start(self) -> Self:
        if self._process is not None:
            return self
        # moto_server, with DynamoDB's transaction isolation (devtools/moto_isolated.py says why)
        argv = [sys.executable, str(Path(__file__).with_name("moto_isolated.py")), "-H", LOOPBACK, "-p", str(self.port)]
        self._process = ManagedProcess("moto", argv, log_path=self.log_path, env={**os.environ, "MOTO_PORT": str(self.port)})
        self._process.start()
        self._process.wait_until(lambda: bool(self.client("sqs").list_queues() is not None), self.startup_timeout, "serving SQS")
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.stop(grace=3.0)


@dataclass(frozen=True)
class JobResources:
    table: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    idempotency_table: str

    def env(self) -> dict[str, str]:
        return {"JOBS_TABLE": self.table, "JOBS_QUEUE_URL": self.queue_url, "IDEMPOTENCY_TABLE": self.idempotency_table}


def create_job_resources(
    sqs: SQSClient,
    dynamodb: DynamoDBClient,
    *,
    prefix: str = "imagegen",
    visibility_timeout: int = 2,
    max_receive_count: int = 3,
) -> JobResources:
    """Queue + DLQ (redrive after ``max_receive_count``), the jobs table and the idempotency table; idempotent. Locally the visibility
    timeout is seconds, not the deployed 6x worker timeout, so retries come back quickly."""
    dlq_url = sqs.create_queue(QueueName=f"{prefix}-jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
    queue_url = sqs.create_queue(
        QueueName=f"{prefix}-jobs", Attributes={"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": redrive}
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    table, idempotency_table = f"{prefix}-jobs", f"{prefix}-idempotency"
    existing = dynamodb.list_tables()["TableNames"]
    for name in (table, idempotency_table):  # both keyed by a string "id", as template.yaml makes them
        if name not in existing:
            dynamodb.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
    return JobResources(table=table, queue_url=queue_url, queue_arn=queue_arn, dlq_url=dlq_url, idempotency_table=idempotency_table)


def create_usage_table(dynamodb: DynamoDBClient, name: str) -> str:
    """The usage table as template.yaml's UsageTable makes it (imagegen.usage.table: pk and sk, both strings);
    idempotent. Returns its name."""
    if name not in dynamodb.list_tables()["TableNames"]:
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    return name
