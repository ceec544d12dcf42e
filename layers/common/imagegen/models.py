"""The base of every pydantic model here: validators and serializers are built on first use, not at import.

A cold start imports every model the function could need (edits, jobs, streaming events, model cards, usage reports)
but a request uses a few of them; building all of them at import was about a third of the API function's own import
CPU (README Performance). ``defer_build`` builds a model's schema the first time it validates or serializes, with the
same result: the models used by every request are built by the first one, the others only if a request needs them.
Under SnapStart the snapshot is taken once per version, so :func:`build_all` builds every model into it instead
(imagegen.snapstart): no restored environment builds one again.
"""

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(defer_build=True)


def build_all() -> int:
    """Build every model defined so far that is still deferred; the number built."""
    built, pending = 0, list(Model.__subclasses__())
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        if not model.__pydantic_complete__:
            model.model_rebuild()
            built += 1
    return built
