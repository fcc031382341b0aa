"""What requests carry, as FastAPI reads it: ids in paths (the ``recforge_id`` path
convertor) and the request bodies, whose limits come from the app's :class:`Limits`: they
are checked with a message that names them, and the OpenAPI schema states them."""

# No ``from __future__ import annotations``: the models are built per app (their limits are
# the app's), and pydantic and FastAPI read their annotations from the live objects.
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Path as PathParam
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from starlette.convertors import Convertor, register_url_convertor

from recforge.serving.service import MAX_K
from recforge.serving.settings import Limits

__all__ = ["Inputs", "check_id_length", "inputs"]


class _AnyId(Convertor[str]):
    """An id in a path: any characters, slashes and line breaks included (Starlette's
    ``path`` convertor, ``.*``, does not match a line break: such an id answered 404 from
    the router, where the same id in a body was answered)."""

    regex = "[\\s\\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("recforge_id", _AnyId())


@dataclass(frozen=True)
class Inputs:
    """The parameter types of one app's routes: ``path_id`` (an id in a path) and the
    models of the bodies of ``POST /recommendations``, ``/admin/reload`` and
    ``/interactions``."""

    path_id: Any
    recommendations: type[BaseModel]
    reload: type[BaseModel]
    events: type[BaseModel]


def check_id_length(value: str, limit: int) -> str:
    """``value``, an id, if it is neither empty nor over ``limit`` characters (else a
    ``ValueError`` that names the limit)."""
    # An empty id is none (and in a path, /users//history, it would not survive URL
    # normalisation: the request would reach another route).
    if not value:
        raise ValueError("an id cannot be empty")
    if len(value) > limit:
        raise ValueError(f"an id of {len(value):,} characters is over this server's limit "
                         f"of {limit:,} (max_id_length)")
    return value


def inputs(limits: Limits) -> Inputs:
    """The parameter types of an app with ``limits``."""

    def check_path_id(value: str) -> str:
        return check_id_length(value, limits.max_id_length)

    def check_id(value: Any) -> Any:
        if isinstance(value, bool):  # JSON true would pass as the id 1
            raise ValueError("an id is a number or a string, not true / false")
        if isinstance(value, str):
            check_id_length(value, limits.max_id_length)
        return value

    path_id = Annotated[str, PathParam(), AfterValidator(check_path_id),
                        WithJsonSchema({"type": "string", "minLength": 1,
                                        "maxLength": limits.max_id_length})]
    body_id = Annotated[int | str, BeforeValidator(check_id), WithJsonSchema(
        {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 1,
                                         "maxLength": limits.max_id_length}]})]
    return Inputs(path_id=path_id, recommendations=_recommendations_request(limits, body_id),
                  reload=_reload_request(), events=_events_request(limits, body_id))


def _recommendations_request(limits: Limits, Id: Any) -> type[BaseModel]:  # noqa: N803
    class RecommendationsRequest(BaseModel):
        """Either ``users`` (known or not) or ``history`` (item ids of an anonymous
        session). At most ``max_batch_results`` recommendations per batch (users x k) and
        ``max_history`` history items."""

        # exactly one of users and history; values only with history (of its length).
        # strict: JSON types as the schema states them (true is no number, "5" no k)
        model_config = ConfigDict(strict=True, json_schema_extra={
            "oneOf": [{"required": ["users"]}, {"required": ["history"]}],
            "dependentRequired": {"values": ["history"]}})

        # None: not given (an explicit null is refused, as the schema says)
        users: list[Id] = Field(  # type: ignore[valid-type,assignment]
            default=None, json_schema_extra={"maxItems": limits.max_batch_results})
        history: list[Id] = Field(  # type: ignore[valid-type,assignment]
            default=None, min_length=1, json_schema_extra={"maxItems": limits.max_history})
        values: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(  # type: ignore[assignment]
            default=None, json_schema_extra={"maxItems": limits.max_history},
            description="Ratings / weights of the history items (same length).")
        k: int = Field(default=10, ge=1, le=MAX_K)
        include_seen: bool = False

        @model_validator(mode="after")
        def one_of(self) -> Any:
            if (self.users is None) == (self.history is None):
                raise ValueError("give exactly one of 'users' and 'history'")
            if self.values is not None and (self.history is None
                                            or len(self.values) != len(self.history)):
                raise ValueError("'values' needs 'history' of the same length")
            if self.users is not None and len(self.users) * self.k > limits.max_batch_results:
                raise ValueError(
                    f"a batch of {len(self.users):,} users x k={self.k} asks for "
                    f"{len(self.users) * self.k:,} recommendations; this server answers at "
                    f"most {limits.max_batch_results:,} per request (max_batch_results): "
                    "split the batch or ask for fewer per user")
            if self.history is not None and len(self.history) > limits.max_history:
                raise ValueError(f"a history of {len(self.history):,} items is over this "
                                 f"server's limit of {limits.max_history:,} (max_history)")
            return self

    return RecommendationsRequest


def _reload_request() -> type[BaseModel]:
    class ReloadRequest(BaseModel):
        model_config = ConfigDict(strict=True)

        # "" would be the working directory
        model: str | None = Field(default=None, min_length=1, max_length=4096)

    return ReloadRequest


def _events_request(limits: Limits, Id: Any) -> type[BaseModel]:  # noqa: N803
    class Event(BaseModel):
        model_config = ConfigDict(strict=True)  # "value": true was stored as 1.0

        user: Id  # type: ignore[valid-type]
        item: Id  # type: ignore[valid-type]
        value: float | None = Field(default=None, allow_inf_nan=False)
        timestamp: int | None = Field(default=None, ge=-(2**62), le=2**62)

    def check_events(events: list[Event]) -> list[Event]:
        if len(events) > limits.max_events:
            raise ValueError(f"{len(events):,} events are over this server's limit of "
                             f"{limits.max_events:,} per request (max_events)")
        return events

    class EventsRequest(BaseModel):
        model_config = ConfigDict(strict=True)

        events: Annotated[list[Event], AfterValidator(check_events)] = Field(
            min_length=1, json_schema_extra={"maxItems": limits.max_events})

    return EventsRequest
