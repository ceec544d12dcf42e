"""The AWS paths a deployment takes that the other tests take with keys in the environment: provider keys read from
Secrets Manager, the model registry read from SSM, and every Bedrock model the template can grant, each through
the function that does it deployed (the API, and the worker for queued jobs). Secrets Manager and SSM are moto
in server mode; the providers are the fakes on loopback. Besides what each test checks, these are the calls the
least-privilege evaluation (tests/conftest.py, devtools/iam_eval.py) needs to see to know those grants are the ones
the code uses."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters import base as parameters_base

from functions.api import app as api
from tests.conftest import clear_caches, job_event, load_event

pytestmark = pytest.mark.integration

# The Bedrock models template.yaml knows (one ServesX condition each) and the size each is asked for; Titan Image
# Generator v2 is retired (its AWS EOL 2026-06-30), refused before any call (tests/integration/test_bedrock_provider_http.py).
BEDROCK_MODELS = {
    "amazon.nova-canvas-v1:0": "1024x1024",
    "stability.stable-image-core-v1:1": "1024x1024",
    "stability.stable-image-ultra-v1:1": "1024x1024",
    "stability.sd3-5-large-v1:0": "1024x1024",
}


def call_api(event: dict[str, Any], lambda_context: Any) -> tuple[int, dict[str, Any]]:
    response = api.lambda_handler(event, lambda_context)
    return response["statusCode"], json.loads(response["body"])


def async_event(**body: Any) -> dict[str, Any]:
    event = load_event("api_generate_url.json", **body)
    event["headers"]["Prefer"] = "respond-async"
    event["multiValueHeaders"]["Prefer"] = ["respond-async"]
    return event


def fresh_container() -> None:
    """What a function's own container starts with: nothing read yet (in process the API and the worker would
    otherwise share the registry, keys and clients one of them read)."""
    clear_caches()
    parameters.clear_caches()
    parameters_base.DEFAULT_PROVIDERS.clear()


def run_job(event: dict[str, Any], worker_poller: Any, lambda_context: Any) -> dict[str, Any]:
    status, accepted = call_api(event, lambda_context)
    assert status == 202, accepted
    fresh_container()  # the worker
    worker_poller.drain()
    fresh_container()  # the API again
    status, done = call_api(job_event(accepted["id"]), lambda_context)
    assert status == 200, done
    return done


@pytest.fixture
def aws_config(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Secrets Manager and SSM at the moto server (boto3's per-service endpoint variables, as a deployment's SDK
    finds the real ones), with Powertools' parameter providers and their caches fresh."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_server.endpoint_url)
    parameters.clear_caches()
    parameters_base.DEFAULT_PROVIDERS.clear()
    yield moto_server
    parameters.clear_caches()
    parameters_base.DEFAULT_PROVIDERS.clear()


def new_secret(moto_server: Any, purpose: str) -> tuple[str, str]:
    """A secret in moto: (its ARN, its value)."""
    value = f"{purpose}-{secrets.token_urlsafe(16)}"
    arn = moto_server.client("secretsmanager").create_secret(Name=f"it-{secrets.token_hex(4)}/{purpose}", SecretString=value)["ARN"]
    return arn, value


@pytest.fixture
def openai_key_in_secrets_manager(aws_config: Any, local_s3: Any, fake_openai: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The OpenAI models served with the key only in Secrets Manager, as deployed (OpenAIApiKeySecretArn)."""
    arn, value = new_secret(aws_config, "openai-api-key")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY_SECRET_ARN", arn)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    fake_openai.requests.clear()
    return value


def test_the_api_sends_the_openai_key_it_read_from_secrets_manager(openai_key_in_secrets_manager, fake_openai, lambda_context) -> None:
    status, body = call_api(load_event("api_generate_b64.json", prompt="a fox", model="gpt-image-1.5", size="1024x1024"), lambda_context)

    assert status == 200, body
    (sent,) = fake_openai.requests
    assert sent["headers"]["Authorization"] == f"Bearer {openai_key_in_secrets_manager}"


def test_the_worker_sends_the_openai_key_it_read_from_secrets_manager(
    openai_key_in_secrets_manager, job_resources, worker_poller, fake_openai, lambda_context
) -> None:
    done = run_job(async_event(prompt="a queued fox", model="gpt-image-1-mini", size="1024x1024"), worker_poller, lambda_context)

    assert done["status"] == "succeeded", done
    (sent,) = fake_openai.requests
    assert sent["headers"]["Authorization"] == f"Bearer {openai_key_in_secrets_manager}"


# Google, Black Forest Labs and Stability AI: (env prefix, fake server class, the fake's key, a model and size, how
# the key is sent).
KEYED = {
    "google": (
        "GOOGLE",
        "tests.fakes.google_server:FakeGoogle",
        "tests.fakes.google_server:KEY",
        "gemini-2.5-flash-image",
        "x-goog-api-key",
        "",
    ),
    "bfl": ("BFL", "tests.fakes.bfl_server:FakeBfl", "tests.fakes.bfl_server:API_KEY", "flux-pro-1.1", "x-key", ""),
    "stability": (
        "STABILITY",
        "tests.fakes.stability_server:FakeStability",
        "tests.fakes.stability_server:API_KEY",
        "stable-image-core",
        "authorization",
        "Bearer ",
    ),
}


def _named(path: str) -> Any:
    from importlib import import_module

    module, name = path.split(":")
    return getattr(import_module(module), name)


@pytest.fixture(params=list(KEYED))
def keyed_provider_in_secrets_manager(
    request: pytest.FixtureRequest, aws_config: Any, local_s3: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A keyed provider's models served with its key only in Secrets Manager, as deployed (<Provider>ApiKeySecretArn):
    (the fake server, the model, the header and the value it must carry)."""
    prefix, server, key, model, header, scheme = KEYED[request.param]
    value = _named(key)
    arn = aws_config.client("secretsmanager").create_secret(Name=f"it-{secrets.token_hex(4)}/{request.param}-api-key", SecretString=value)[
        "ARN"
    ]
    monkeypatch.delenv(f"{prefix}_API_KEY", raising=False)
    monkeypatch.setenv(f"{prefix}_API_KEY_SECRET_ARN", arn)
    with _named(server)() as fake:
        monkeypatch.setenv(f"{prefix}_BASE_URL", fake.base_url)
        yield fake, model, header, scheme + value


def sent_keys(fake: Any, header: str) -> set[str]:
    return {value for sent in fake.requests for name, value in sent["headers"].items() if name.lower() == header}


def test_the_api_sends_a_keyed_providers_key_it_read_from_secrets_manager(keyed_provider_in_secrets_manager, lambda_context) -> None:
    fake, model, header, expected = keyed_provider_in_secrets_manager
    status, body = call_api(load_event("api_generate_url.json", prompt="a fox", model=model, size="1024x1024"), lambda_context)

    assert status == 200, body
    assert sent_keys(fake, header) == {expected}


def test_the_worker_sends_a_keyed_providers_key_it_read_from_secrets_manager(
    keyed_provider_in_secrets_manager, job_resources, worker_poller, lambda_context
) -> None:
    fake, model, header, expected = keyed_provider_in_secrets_manager
    done = run_job(async_event(prompt="a queued fox", model=model, size="1024x1024"), worker_poller, lambda_context)

    assert done["status"] == "succeeded", done
    assert sent_keys(fake, header) == {expected}


@pytest.fixture
def azure_key_in_secrets_manager(aws_config: Any, local_s3: Any, fake_openai: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Azure OpenAI served with its key only in Secrets Manager, as deployed (AzureOpenAIApiKeySecretArn)."""
    arn, value = new_secret(aws_config, "azure-openai-api-key")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", fake_openai.base_url.removesuffix("/v1"))
    monkeypatch.setenv("AZURE_OPENAI_API_KEY_SECRET_ARN", arn)
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENTS", json.dumps({"dall-e-3": "my-dalle3", "dall-e-2": "my-dalle2"}))
    fake_openai.requests.clear()
    return value


def test_the_api_sends_the_azure_key_it_read_from_secrets_manager(azure_key_in_secrets_manager, fake_openai, lambda_context) -> None:
    status, body = call_api(load_event("api_generate_b64.json", prompt="a fox", model="azure/dall-e-3", size="1024x1024"), lambda_context)

    assert status == 200, body
    (sent,) = fake_openai.requests
    assert sent["headers"]["api-key"] == azure_key_in_secrets_manager


def test_the_worker_sends_the_azure_key_it_read_from_secrets_manager(
    azure_key_in_secrets_manager, job_resources, worker_poller, fake_openai, lambda_context
) -> None:
    done = run_job(async_event(prompt="a queued fox", model="azure/dall-e-2", size="256x256"), worker_poller, lambda_context)

    assert done["status"] == "succeeded", done
    (sent,) = fake_openai.requests
    assert sent["headers"]["api-key"] == azure_key_in_secrets_manager


@pytest.fixture
def registry_in_ssm(aws_config: Any, local_s3: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A model registry document in an SSM parameter, as deployed (ModelRegistryParameter): the local model only."""
    name = f"/it-{secrets.token_hex(4)}/model-registry"
    document = {"models": ["local"], "default_model": "local"}
    aws_config.client("ssm").put_parameter(Name=name, Type="String", Value=json.dumps(document))
    monkeypatch.setenv("MODEL_REGISTRY_PARAMETER", name)
    return name


def test_the_api_serves_the_models_of_the_registry_in_ssm(registry_in_ssm, lambda_context) -> None:
    status, body = call_api(load_event("api_models.json"), lambda_context)

    assert status == 200, body
    assert [model["id"] for model in body["data"]] == ["local"]


def test_the_worker_plans_jobs_with_the_registry_in_ssm(registry_in_ssm, job_resources, worker_poller, lambda_context) -> None:
    done = run_job(async_event(prompt="a registered fox", model="local", size="256x256"), worker_poller, lambda_context)

    assert done["status"] == "succeeded", done


@pytest.mark.parametrize(("model", "size"), BEDROCK_MODELS.items())
def test_every_bedrock_model_the_template_grants_generates_through_the_api(bedrock_env, model, size, lambda_context) -> None:
    status, body = call_api(load_event("api_generate_url.json", prompt="a lighthouse", model=model, size=size, n=1), lambda_context)

    assert status == 200, body
    assert [request["model"] for request in bedrock_env.requests] == [model]


@pytest.mark.parametrize(("model", "size"), BEDROCK_MODELS.items())
def test_every_bedrock_model_the_template_grants_generates_through_the_worker(
    bedrock_env, job_resources, worker_poller, model, size, lambda_context
) -> None:
    done = run_job(async_event(prompt="a queued lighthouse", model=model, size=size, n=1), worker_poller, lambda_context)

    assert done["status"] == "succeeded", done
    assert [request["model"] for request in bedrock_env.requests] == [model]


# Cross-Region inference profiles (template.yaml's BedrockInferenceProfiles; the code takes them in BEDROCK_MODELS).
PROFILES = ("us.amazon.nova-canvas-v1:0", "us.stability.stable-image-core-v1:1", "us.stability.sd3-5-large-v1:0")


@pytest.mark.parametrize("through", ["api", "worker"])
@pytest.mark.parametrize("profile", PROFILES)
def test_a_bedrock_model_served_through_an_inference_profile_is_invoked_by_the_profiles_id(
    bedrock_env, job_resources, worker_poller, monkeypatch, through, profile, lambda_context
) -> None:
    monkeypatch.setenv("BEDROCK_MODELS", profile)
    if through == "api":
        event = load_event("api_generate_url.json", prompt="a lighthouse", model=profile, size="1024x1024", n=1)
        status, body = call_api(event, lambda_context)
        assert status == 200, body
    else:
        done = run_job(async_event(prompt="a queued lighthouse", model=profile, size="1024x1024", n=1), worker_poller, lambda_context)
        assert done["status"] == "succeeded", done
    assert [request["model"] for request in bedrock_env.requests] == [profile]
