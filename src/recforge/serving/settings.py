"""What a server is set up with, checked once when the app is built: its :class:`Limits`,
the host names a request may give, and its keys (docs/serving.md, "Protection")."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass

from recforge.errors import ConfigError

__all__ = ["LOOPBACK_HOSTS", "Limits", "allowed_host_names", "host_name", "server_keys"]

#: The names a ``Host`` header may give by default: this machine's loopback names.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (``recforge serve --max-...``).

    A request over a limit is refused before any work, with a message that names the limit:
    413 for the body, 422 for the rest, 503 (with ``Retry-After``) when the heavy-work queue
    is full.
    """

    #: Bytes of a request body (counted as it arrives, not after it was read whole).
    max_body_bytes: int = 1 << 20
    #: Characters of one id (user or item), in a path or a body.
    max_id_length: int = 256
    #: Recommendations one batch may ask for: its users times ``k``.
    max_batch_results: int = 100_000
    #: Items of an anonymous history (``POST /recommendations {"history": ...}``).
    max_history: int = 1_000
    #: Events of one ``POST /interactions``.
    max_events: int = 10_000
    #: Heavy requests (batches, fold-ins, explanations, search, similar items, writes,
    #: reloads) that run at once, each in a thread of the server's heavy-work pool.
    heavy_workers: int = 4
    #: Heavy requests that may wait for a thread; one more is answered 503 at once.
    heavy_queue: int = 16
    #: Seconds a 503 asks the client to wait (``Retry-After``).
    retry_after: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            low = 0 if f.name == "heavy_queue" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"Limits.{f.name} must be an integer >= {low}, got {value!r}")


def host_name(value: str) -> str | None:
    """The host name of a ``Host`` header (or of an allowed-host setting), lower case,
    without port, brackets or trailing dot; ``None`` when it is not one."""
    text = value.strip().lower()
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        rest = text[end + 1:] if end > 0 else "x"
        if rest and not (rest[0] == ":" and rest[1:].isdigit()):
            return None
        name = text[1:end]
    elif text.count(":") == 1:  # name:port
        name, port = text.split(":")
        if not port.isdigit():
            return None
    else:  # a name, or (in a setting) a bare IPv6 address
        name = text
    name = name.rstrip(".")
    return name if name and not any(c in name for c in " /\\@?#[]") else None


def allowed_host_names(names: Iterable[str] | None) -> frozenset[str] | None:
    """The host names a request may give (``None``: any, for ``"*"``); ``names=None``:
    :data:`LOOPBACK_HOSTS`."""
    given = list(LOOPBACK_HOSTS if names is None else ([names] if isinstance(names, str)
                                                       else names))
    if "*" in given:
        return None
    out = set()
    for name in given:
        parsed = host_name(str(name))
        if parsed is None:
            raise ConfigError(f"not a host name: {name!r} (allowed hosts are names or "
                              "addresses, without scheme or path)")
        out.add(parsed)
    if not out:
        raise ConfigError("no allowed host: give at least one name, or '*' for any")
    return frozenset(out)


def server_keys(api_key: str | None, admin_key: str | None) -> tuple[str | None, str | None]:
    """The read key and the admin key a server uses: those given, else the environment's
    ``RECFORGE_API_KEY`` and ``RECFORGE_ADMIN_KEY`` (``None``: no key). An empty key, or an
    admin key equal to the read key, is a :class:`~recforge.errors.ConfigError`."""
    for given, which in ((api_key, "API key"), (admin_key, "admin key")):
        if given == "":
            raise ConfigError(f"an empty {which} would lock every endpoint it guards; leave "
                              "it out to serve without one")
    key = api_key if api_key is not None else os.environ.get("RECFORGE_API_KEY") or None
    admin = admin_key if admin_key is not None else (
        os.environ.get("RECFORGE_ADMIN_KEY") or None)
    if key is not None and admin is not None and key == admin:
        raise ConfigError("the admin key must differ from the read key (the read key is "
                          "handed to every client and to the web page's users)")
    return key, admin
