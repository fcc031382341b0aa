"""What answers look like, for the OpenAPI description only (the routes encode their own
JSON): the answer models, the error statuses each route documents, and its links."""

# No ``from __future__ import annotations``: pydantic and FastAPI read these annotations.
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["AnyId", "BatchRecommendations", "Because", "ErrorBody", "Explanations",
           "FoundItem", "Forgotten", "Health", "HistoryItem", "ItemExplanation", "ItemSearch",
           "Modality", "ModelInfo", "Reason", "RecommendedItem", "Reloaded",
           "SessionRecommendations", "SimilarItems", "Stored", "UserError", "UserHistory",
           "UserRecommendations", "errors", "link"]

AnyId = int | str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a message, or (422 from validation) a list of errors."""

    detail: str | list[dict[str, Any]]


class Because(BaseModel):
    item: AnyId
    similarity: float
    title: str | None = None


class RecommendedItem(BaseModel):
    item: AnyId
    rank: int
    score: float | None = Field(description="The model's score; null in a popularity "
                                            "fallback (\"fallback\": \"popular\").")
    popularity: int | None = Field(default=None, description="Popularity fallbacks only: "
                                   "the item's number of training users.")
    title: str | None = Field(default=None, description="With item metadata only.")
    metadata: dict[str, str | None] | None = Field(
        default=None, description="The item's other display columns (genres, year, ...), "
        "with item metadata that has them only.")
    because: Because | None = Field(default=None, description="With explain=true only.")


class UserRecommendations(BaseModel):
    user: AnyId
    items: list[RecommendedItem]
    fallback: Literal["popular", "history"] | None


class UserError(BaseModel):
    """A user of a batch whose answer failed (the other users are answered)."""

    user: AnyId
    error: str


class BatchRecommendations(BaseModel):
    results: list[UserRecommendations | UserError]


class SessionRecommendations(BaseModel):
    items: list[RecommendedItem]
    unknown_items: list[AnyId]


class HistoryItem(BaseModel):
    item: AnyId
    value: float | None
    source: Literal["events", "training"]
    title: str | None = None


class UserHistory(BaseModel):
    user: AnyId
    known: bool
    total: int
    items: list[HistoryItem]


class SimilarItems(BaseModel):
    item: AnyId
    similar: list[RecommendedItem]


class FoundItem(BaseModel):
    item: AnyId
    title: str | None = None
    match: Literal["id", "title", "text"] | None = Field(
        default=None, description="Ranked by text vectors only: how the item matched "
        "(its id, its title, or the similarity of its text vector).")
    similarity: float | None = Field(
        default=None, description="Ranked by text vectors only: the cosine between the "
        "query's vector and the item's (null: the item has none).")


class ItemSearch(BaseModel):
    query: str
    total: int = Field(description="Items whose title (or id) matches; with "
                       "match=text, the items that have a text vector.")
    items: list[FoundItem]
    text_vectors: str | None = Field(
        default=None, description="The feature group whose vectors ranked the items by "
        "text similarity; absent when the search was by title alone.")


class Reason(BaseModel):
    """A history item that resembles an explained item in one feature group."""

    group: str = Field(description="The feature group (modality): genres, text, image...")
    kind: Literal["vectors", "categories", "words", "number"]
    item: AnyId
    title: str | None = None
    similarity: float = Field(description="Cosine of the two items in this group alone.")
    shared: list[str] | None = Field(
        default=None, description="Groups of categories or words: what both items have "
        "(at most 5).")


class ItemExplanation(BaseModel):
    item: AnyId
    title: str | None = None
    because: list[Reason] = Field(description="One reason per group where a history "
                                  "item resembles this one, most similar first.")


class Explanations(BaseModel):
    user: AnyId | None = Field(default=None, description="With user= only.")
    unknown_items: list[AnyId] | None = Field(
        default=None, description="With history= only: its items unknown to the model, "
        "left out.")
    explanations: list[ItemExplanation]


class Modality(BaseModel):
    group: str
    kind: Literal["vectors", "categories", "words", "number"]


class ModelInfo(BaseModel):
    model: str
    params: dict[str, Any]
    n_users: int
    n_items: int
    recforge_version: str | None
    created: str | None
    train_fingerprint: str | None
    supports_history: bool
    reads_order: bool = Field(default=False, description="Whether the model reads the order "
                              "of a history (next-item models): posted events extend a "
                              "user's sequence, and a history's order matters.")
    directory: str | None = Field(description="The model directory's name (never its path).")
    privacy: dict[str, Any] | None = Field(
        default=None, description="A differentially private fit's spent 'epsilon' and "
        "'delta' (per user) and how they were reached; null if not trained privately.")
    modalities: list[Modality] = Field(
        default=[], description="The model's item feature groups (feature models only): "
        "what GET /explanations explains by; a group of text vectors ranks GET /items.")
    forgotten_users: int = Field(
        default=0, description="Users removed from the model since it was trained "
        "(recforge forget, or DELETE /users/{id} on a model that forgets exactly).")


class Reloaded(BaseModel):
    reloaded: bool
    model: ModelInfo


class Stored(BaseModel):
    stored: int


class Forgotten(BaseModel):
    user: str
    deleted_events: int
    #: what the served model does: "forgetting" (an exact copy without the user is being
    #: made and swapped in), "cut_off" (its row of the user is not answered from) or
    #: "not_in_model"
    model: str


class Health(BaseModel):
    status: str


_ERROR_TEXT = {
    400: "Malformed request (no Host header, a body that is not JSON) or one the model "
         "cannot answer.",
    401: "Missing or wrong key.",
    403: "Admin routes are off: the server has a read key but no admin key.",
    404: "Unknown item (or, for explanations, a user the model does not know and who "
         "posted nothing).",
    413: "The body is over the server's size limit.",
    415: "A request that changes state must be Content-Type: application/json.",
    421: "The Host header names a host this server does not serve.",
    422: "Invalid parameters or body, or over one of the server's limits.",
    503: "The server's heavy-work queue is full: retry after Retry-After seconds.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that may answer ``codes`` (and 400, 421, as every
    route may)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in (400, 421, *codes):
        out[code] = {"model": ErrorBody, "description": _ERROR_TEXT[code]}
    if 503 in codes:
        out[503]["headers"] = {"Retry-After": {
            "description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
    return out


def link(operation: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link to ``operation`` with its ``parameters`` (runtime expressions)."""
    return {"operationId": operation, "parameters": parameters}
