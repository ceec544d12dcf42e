"""A bug is visible: a 500 from the API emits the InternalErrors metric (EMF on stdout, as Lambda ships it to
CloudWatch) that template.yaml's alarm watches; a client's mistake does not."""

from __future__ import annotations

import json

import pytest

from functions.api import app
from imagegen.observability import INTERNAL_ERRORS_METRIC
from tests.conftest import EVENTS, load_event

pytestmark = pytest.mark.unit


def emitted_metrics(output: str) -> dict[str, dict[str, object]]:
    """Metric name -> its EMF record, for every EMF line printed."""
    found = {}
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            record = json.loads(line)
            for directive in record["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    found[metric["Name"]] = record
    return found


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "0")


def test_a_bug_answers_500_and_counts_an_internal_error(metrics_on, monkeypatch, lambda_context, capsys) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app, "list_models", broken)
    response = app.lambda_handler(load_event("api_models.json"), lambda_context)
    assert response["statusCode"] == 500
    assert json.loads(response["body"])["error"]["code"] == "internal_error"
    record = emitted_metrics(capsys.readouterr().out)[INTERNAL_ERRORS_METRIC]
    assert record[INTERNAL_ERRORS_METRIC] in (1, 1.0, [1.0])
    assert record["service"] == "imagegen"
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "ImageGen"
    assert ["service"] in directive["Dimensions"]


def test_a_client_error_counts_no_internal_error(metrics_on, lambda_context, capsys) -> None:
    response = app.lambda_handler(load_event("api_generate_invalid.json"), lambda_context)
    assert response["statusCode"] == 400
    assert INTERNAL_ERRORS_METRIC not in emitted_metrics(capsys.readouterr().out)


def test_a_bug_in_the_worker_fails_the_message_and_counts_an_internal_error(metrics_on, monkeypatch, lambda_context, capsys) -> None:
    from functions.worker import app as worker

    class BrokenJobs:
        images = type("Images", (), {"settings": type("Settings", (), {"response_margin_seconds": 2.5})()})()

        def run_message(self, *_: object, **__: object) -> None:
            raise KeyError("a bug")

    monkeypatch.setattr(worker, "get_job_service", BrokenJobs)
    event = json.loads((EVENTS / "sqs.json").read_text())
    response = worker.lambda_handler(event, lambda_context)
    # Every message of the batch fails (and comes back), and each bug is counted
    messages = [record["messageId"] for record in event["Records"]]
    assert [item["itemIdentifier"] for item in response["batchItemFailures"]] == messages
    record = emitted_metrics(capsys.readouterr().out)[INTERNAL_ERRORS_METRIC]
    assert record["service"] == "imagegen"
    assert len(messages) == 2 and record[INTERNAL_ERRORS_METRIC] == [1.0, 1.0]
