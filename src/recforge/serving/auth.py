"""The keys of the routes: the read key (``X-API-Key``) and the admin key
(``X-Admin-Key``) as FastAPI dependencies, declared in the OpenAPI description."""

# No ``from __future__ import annotations``: FastAPI reads the dependencies' parameters.
import hmac
from typing import Any

from fastapi import Depends, HTTPException, Security
from fastapi.security import APIKeyHeader

__all__ = ["key_dependencies"]


def _matches(given: str | None, expected: str) -> bool:
    # the header's bytes (HTTP headers arrive as latin-1) against the key's UTF-8 bytes,
    # as the fast path compares them: a non-ASCII key works on every endpoint alike
    return given is not None and hmac.compare_digest(
        given.encode("latin-1", errors="replace"), expected.encode())


def key_dependencies(key: str | None, admin: str | None) -> tuple[list[Any], list[Any]]:
    """The dependencies of a route that needs the read ``key`` and of an admin route (the
    ``admin`` key; off, 403, on a server with a read key but no admin key). Without keys,
    none at all: a dependency would cost every request a resolution step."""
    read_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ReadKey",
                               description="The read key (recforge serve --api-key).")
    admin_header = APIKeyHeader(name="X-Admin-Key", auto_error=False, scheme_name="AdminKey",
                                description="The admin key (recforge serve --admin-key).")

    def check_key(x_api_key: str | None = Security(read_header)) -> None:
        if key is not None and not _matches(x_api_key, key):
            raise HTTPException(status_code=401, detail="missing or wrong X-API-Key header")

    def check_admin(x_admin_key: str | None = Security(admin_header)) -> None:
        if admin is not None:
            if not _matches(x_admin_key, admin):
                raise HTTPException(status_code=401,
                                    detail="missing or wrong X-Admin-Key header")
        elif key is not None:
            raise HTTPException(status_code=403, detail=(
                "admin routes are off on a server with a read key but no admin key "
                "(recforge serve --admin-key, or RECFORGE_ADMIN_KEY)"))

    guarded = [Depends(check_key)] if key is not None else []
    admin_only = [Depends(check_admin)] if (key is not None or admin is not None) else []
    return guarded, admin_only
