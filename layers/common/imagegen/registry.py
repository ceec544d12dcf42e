"""The deployment's model registry, resolved once per container: the document from ``MODEL_REGISTRY`` (JSON in the
environment, validated with the settings) or from the SSM parameter ``MODEL_REGISTRY_PARAMETER`` (read with
Powertools parameters), else the providers' defaults."""

from __future__ import annotations

from imagegen.models import ModelRegistry, RegistryConfig, build_registry
from imagegen.settings import Settings

PARAMETER_MAX_AGE_SECONDS = 300


def registry_config(settings: Settings) -> RegistryConfig | None:
    if settings.model_registry is not None:
        return settings.model_registry
    if settings.model_registry_parameter is None:
        return None
    from aws_lambda_powertools.utilities import parameters

    document = parameters.get_parameter(settings.model_registry_parameter, max_age=PARAMETER_MAX_AGE_SECONDS)
    return RegistryConfig.model_validate_json(str(document))


def deployment_registry(settings: Settings) -> ModelRegistry:
    """A bad document or an impossible combination fails the container's first request loudly (a 500 with the
    reason in the logs), never serving models the deployment did not mean to."""
    return build_registry(
        openai_enabled=settings.openai_enabled,
        default_model=settings.default_model,
        bedrock_enabled=settings.bedrock_enabled,
        bedrock_models=settings.bedrock_models,
        config=registry_config(settings),
        azure_deployments=settings.azure_openai_deployments,
    )
