"""Lambda SnapStart hooks (docs/snapstart.md): what one snapshot must not hand to every environment restored from it.

With the template's ``SnapStart`` parameter on, Lambda runs a function's init once per published version, snapshots
the environment and resumes every new environment from that snapshot. Whatever init left in memory is then shared by
all of them, so these hooks drop it:

- the random module's generator (the retry jitter of imagegen.providers.upstream and the budget conflict pauses of
  imagegen.usage.budgets, botocore's retry jitter) is reseeded from the OS after each restore: restored copies would
  otherwise draw the same sequence. ``secrets``, ``uuid.uuid4`` and ``os.urandom`` keep no state of their own (they
  read the kernel on every call) and need nothing;
- the network clients (imagegen.clients' cached S3, DynamoDB, SQS, Bedrock and httpx clients) and everything built
  from them (the service, the job service, the providers, the idempotent generator) are forgotten, so the first
  request after a restore builds them anew: no connection opened before the snapshot, and no credentials it cached;
- the secrets Powertools' parameters utility cached (the providers' API keys, read with ``max_age``) are forgotten,
  so a key is read from Secrets Manager again after a restore (a rotation made since the snapshot is seen), and none
  is in memory when the snapshot is taken.

Nothing else in the code is unique per environment at init: request and job ids, presign tokens and seeds are drawn
per call. The settings (read from the environment, the same in every copy), botocore's parsed data files and the
price book are kept: static data, and what makes a restore cheaper than a cold start. Before the snapshot every
pydantic model the function imported is built (they are deferred to their first use otherwise: imagegen.models).

The hooks register at import with ``snapshot_restore_py``, which the managed Python runtime ships; the handlers import
this module. Where the module is missing (a plain interpreter, ``sam local``), nothing registers and both hooks can
still be called directly. The API function's own runtime loop (functions/api/runtime.py) runs them as awslambdaric
does. Each hook takes milliseconds: Lambda allows an after-restore hook 10 s.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Any

# (module, cached factory): every cache holding a client or something built from one. Looked up in sys.modules, never
# imported here: a function that never built a client (the authorizer) pays nothing for its hooks.
CLIENT_CACHES = (
    ("imagegen.clients", "s3_client"),
    ("imagegen.clients", "http_client"),
    ("imagegen.clients", "dynamodb_client"),
    ("imagegen.clients", "sqs_client"),
    ("imagegen.clients", "bedrock_runtime_client"),
    ("imagegen.providers", "get_provider"),
    ("imagegen.service", "get_service"),
    ("imagegen.jobs", "get_job_service"),
    ("imagegen.idempotency", "get_idempotent_generator"),
)
POWERTOOLS_PARAMETERS = "aws_lambda_powertools.utilities.parameters"


def forget_clients() -> None:
    """Drop every cached client and what was built from one; an open httpx pool is closed first."""
    clients = sys.modules.get("imagegen.clients")
    http_client = getattr(clients, "http_client", None)
    if http_client is not None and http_client.cache_info().currsize:
        http_client().close()
    for module_name, name in CLIENT_CACHES:
        cached: Any = getattr(sys.modules.get(module_name), name, None)
        if cached is not None:
            cached.cache_clear()


def forget_secrets() -> None:
    """Empty and drop Powertools' parameter providers: their caches (the secrets read through them) and their
    clients. Emptied first, so that a provider still referenced elsewhere keeps no secret either."""
    parameters: Any = sys.modules.get(POWERTOOLS_PARAMETERS)
    if parameters is None:
        return
    for provider in list(parameters.base.DEFAULT_PROVIDERS.values()):
        provider.clear_cache()
    parameters.clear_caches()


def build_models() -> None:
    """Every model the function imported built into the snapshot (imagegen.models defers each to its first use):
    static, the same in every copy, and work no restored environment then repeats."""
    models: Any = sys.modules.get("imagegen.models")
    if models is not None:
        models.build_all()


def before_snapshot() -> None:
    """Every model built, and nothing secret and no connection, goes into the snapshot."""
    build_models()
    forget_secrets()
    forget_clients()


def after_restore() -> None:
    """This environment's own random sequence, clients and secrets, none of the snapshot's."""
    random.seed()
    forget_secrets()
    forget_clients()


def _register() -> bool:
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:  # not Lambda's managed runtime: no snapshot will be taken
        return False
    hooks: tuple[tuple[Callable[[Callable[[], None]], Any], Callable[[], None]], ...] = (
        (register_before_snapshot, before_snapshot),
        (register_after_restore, after_restore),
    )
    for register, hook in hooks:
        register(hook)
    return True


REGISTERED = _register()
