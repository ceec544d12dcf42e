"""The worker against real loopback servers (S3: SeaweedFS; SQS and DynamoDB: moto server; the fake OpenAI and the fake
Bedrock): a failure no retry can fix (the deployment's key refused, the account out of quota, a model not enabled or
needing an inference profile) fails the job at its first delivery, with nothing handed back to SQS to burn its
attempts; a transient failure still is."""

from __future__ import annotations

import copy
import json
import time
import uuid

import pytest

from functions.worker import app as worker
from tests.conftest import EVENTS

pytestmark = pytest.mark.integration


def sqs_record(body: dict) -> dict:
    record = copy.deepcopy(json.loads((EVENTS / "sqs.json").read_text())["Records"][0])
    record["messageId"] = str(uuid.uuid4())
    record["body"] = json.dumps({"id": f"cfg-{uuid.uuid4().hex[:12]}", **body})
    record["attributes"]["ApproximateReceiveCount"] = "1"
    record["attributes"]["SentTimestamp"] = str(int(time.time() * 1000))
    return record


@pytest.fixture
def providers(job_resources, fake_openai, fake_bedrock, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-integration-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("BEDROCK_ENABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake_bedrock.endpoint)
    monkeypatch.setenv("PROVIDER_MAX_RETRIES", "0")
    fake_openai.requests.clear()
    fake_bedrock.reset()
    return fake_openai, fake_bedrock


def manifest(s3, bucket: str, record: dict) -> dict:
    job_id = json.loads(record["body"])["id"]
    return json.loads(s3.get_object(Bucket=bucket, Key=f"results/{job_id}.json")["Body"].read())


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"prompt": "fail:401", "model": "gpt-image-1-mini", "size": "1024x1024"}, "provider_auth_failed"),
        ({"prompt": "fail:403", "model": "gpt-image-1-mini", "size": "1024x1024"}, "provider_auth_failed"),
        ({"prompt": "fail:404", "model": "gpt-image-1-mini", "size": "1024x1024"}, "provider_model_unavailable"),
        ({"prompt": "fail:quota", "model": "gpt-image-1-mini", "size": "1024x1024"}, "provider_quota_exceeded"),
        ({"prompt": "fail:AccessDeniedException", "model": "stability.sd3-5-large-v1:0", "size": "1024x1024"}, "provider_auth_failed"),
        ({"prompt": "a fox", "model": "amazon.nova-canvas-v1:0", "size": "512x512"}, "provider_inference_profile_required"),
    ],
)
def test_what_no_retry_can_fix_fails_the_job_at_once(providers, local_s3, s3, lambda_context, body, code) -> None:
    _, fake_bedrock = providers
    fake_bedrock.profile_only.add("amazon.nova-canvas-v1:0")  # Bedrock refuses its bare id
    transient = sqs_record({"prompt": "fail:500", "model": "gpt-image-1-mini", "size": "1024x1024"})
    permanent = sqs_record(body)

    response = worker.lambda_handler({"Records": [permanent, transient]}, lambda_context)

    assert response == {"batchItemFailures": [{"itemIdentifier": transient["messageId"]}]}
    job = manifest(s3, local_s3.bucket, permanent)
    assert (job["status"], job["error"]["code"], job["retryable"], job["attempts"]) == ("failed", code, False, 1)
