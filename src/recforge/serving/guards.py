"""The pure-ASGI guard in front of the whole app: the ``Host`` check, a JSON content type
on every request that changes state, and the body size limit (docs/serving.md,
"Protection")."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from recforge.serving.responses import send_error
from recforge.serving.settings import host_name

__all__ = ["Guard"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Guard:
    """Pure ASGI middleware in front of everything: the ``Host`` check (DNS rebinding), a
    JSON content type on every request that changes state (cross-site forms and ``no-cors``
    fetches), and the body size limit, counted while the body arrives. (Pure ASGI: a
    ``BaseHTTPMiddleware`` would cost every request a task and a body copy.)

    ``hosts``: the host names a request may give (``None``: any); ``max_body``: bytes."""

    def __init__(self, app: Any, *, hosts: frozenset[str] | None, max_body: int) -> None:
        self.app = app
        self.hosts = hosts
        self.max_body = max_body
        self._too_large = (f"the request body is over this server's limit of {max_body:,} "
                           "bytes (max_body_bytes)")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = content_type = length = None
        hosts = 0
        for name, value in scope["headers"]:
            if name == b"host":
                host, hosts = value, hosts + 1
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        if self.hosts is not None:
            if hosts != 1:
                await send_error(send, 400, "a request needs exactly one Host header")
                return
            name = host_name(host.decode("latin-1"))  # type: ignore[union-attr]
            if name not in self.hosts:
                await send_error(send, 421, "this server does not answer for that Host "
                                            "(recforge serve --allowed-host NAME adds one)")
                return
        if scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope["method"], content_type, length)
        if refusal is not None:
            await send_error(send, *refusal)
            return
        await self._counted(scope, receive, send)

    def _refusal(self, method: str, content_type: bytes | None,
                 length: bytes | None) -> tuple[int, str] | None:
        """The status and message that refuse a request that changes state, from its
        headers alone; ``None`` when they let it through."""
        if content_type is None or content_type.split(b";", 1)[0].strip().lower() \
                != b"application/json":
            return 415, f"a {method} request must say Content-Type: application/json"
        if length is not None:
            digits = length.strip()
            if not digits.isdigit():
                return 400, "Content-Length is not a number"
            # (more than 18 digits is over any limit: never parsed, so Python's refusal of
            # integers of over 4,300 digits cannot turn it into a 500)
            if len(digits) > 18 or int(digits) > self.max_body:
                return 413, self._too_large
        return None

    async def _counted(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Run the app with the body counted as it arrives: 413 once it is over the limit."""
        seen = 0
        started = False

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:  # FastAPI answers it (413) like any HTTPException
                    raise HTTPException(413, detail=self._too_large)
            return message

        async def watched(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except HTTPException as exc:  # read by something that does not map it
            if exc.status_code != 413 or started:
                raise
            await send_error(send, 413, self._too_large)
