"""``recforge serve``: the HTTP server of a trained model."""

from __future__ import annotations

import gc
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import typer

from recforge.cli.common import check_model_dir, console, log
from recforge.errors import ConfigError


def serve(
    model: Path = typer.Option(..., "--model", help="Directory of a trained model."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="RECFORGE_API_KEY",
                                       help="The read key: require this X-API-Key header "
                                            "(every endpoint but /health, the web page, the "
                                            "API description at /docs and /openapi.json, "
                                            "and the admin routes)."),
    admin_key: str | None = typer.Option(None, "--admin-key", envvar="RECFORGE_ADMIN_KEY",
                                         help="The admin key: POST /admin/reload and DELETE "
                                              "/users/{id} require this X-Admin-Key header. "
                                              "With --api-key and no admin key they are off."),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help="Also answer requests "
                                           "whose Host header names this host (repeatable; "
                                           "'*' for any). Default: the --host name and the "
                                           "loopback names."),
    events: str | None = typer.Option(None, "--events", help="Event store for POST "
                                      "/interactions: a SQLite file path or a SQLAlchemy URL "
                                      "(postgresql+psycopg://user@host/db; pip install "
                                      "'recforge\\[postgres]'). Default: MODEL.events.sqlite "
                                      "beside the model directory."),
    no_events: bool = typer.Option(False, "--no-events", help="Serve without an event store."),
    index: str = typer.Option("exact", "--index", help="exact, or ivf: an approximate faiss "
                              "index for large catalogues (dot-product models; "
                              "pip install 'recforge\\[ann]')."),
    n_probe: int = typer.Option(8, "--n-probe", help="Lists the ivf index scans per query."),
    max_body_bytes: int | None = typer.Option(None, "--max-body-bytes", help="Largest "
                                              "request body, in bytes (default 1,048,576; "
                                              "413 above)."),
    max_id_length: int | None = typer.Option(None, "--max-id-length", help="Longest user "
                                             "or item id, in characters (default 256)."),
    max_batch_results: int | None = typer.Option(None, "--max-batch-results", help="Most "
                                                 "recommendations one batch may ask for, "
                                                 "users x k (default 100,000)."),
    max_history: int | None = typer.Option(None, "--max-history", help="Most items of an "
                                           "anonymous history (default 1,000)."),
    max_events: int | None = typer.Option(None, "--max-events", help="Most events per "
                                          "POST /interactions (default 10,000)."),
    heavy_workers: int | None = typer.Option(None, "--heavy-workers", help="Heavy requests "
                                             "(batches, fold-ins, explanations, search, "
                                             "similar items, writes, reloads) run at once "
                                             "(default 4)."),
    heavy_queue: int | None = typer.Option(None, "--heavy-queue", help="Heavy requests that "
                                           "may wait; one more is answered 503 with "
                                           "Retry-After (default 16)."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="One line "
                                    "per request on standard error: method, path (user "
                                    "ids included), status, milliseconds."),
) -> None:
    """Serve recommendations over HTTP (OpenAPI docs at /docs)."""
    check_model_dir(model)  # before torch is imported: a mistyped path is answered at once
    given = {"max_body_bytes": max_body_bytes, "max_id_length": max_id_length,
             "max_batch_results": max_batch_results, "max_history": max_history,
             "max_events": max_events, "heavy_workers": heavy_workers,
             "heavy_queue": heavy_queue}
    store = None if no_events else (events or model.with_name(model.name + ".events.sqlite"))
    _run(model, host, port, allowed_host, limits={n: v for n, v in given.items() if v is not None},
         api_key=api_key, admin_key=admin_key, events=store, index=index, n_probe=n_probe,
         access_log=access_log)


def _run(model: Path, host: str, port: int, allowed_host: list[str], *,
         limits: dict[str, int], **app_options: Any) -> None:
    """Check the address, load the model into an app and run it under uvicorn until
    stopped."""
    import torch  # lazy: seconds to import
    import uvicorn  # lazy: the server, only for this command

    from recforge.serving.app import create_app  # lazy: imports torch and FastAPI
    from recforge.serving.settings import LOOPBACK_HOSTS, Limits  # lazy: imports torch

    checked = Limits(**limits)  # a bad limit is named before anything else
    # The bound name answers too, unless it stands for every interface (then name the
    # public ones with --allowed-host).
    hosts = [*LOOPBACK_HOSTS, *([host] if host not in ("0.0.0.0", "::", "") else []),
             *allowed_host]
    _check_can_listen(host, port)  # before loading the model, and as one line
    # One request's scoring is a small product: extra torch threads only contend with the
    # event loop (OpenMP spin-waits), so the server scores on one thread.
    torch.set_num_threads(1)
    application = create_app(model, allowed_hosts=hosts, limits=checked,
                             **app_options)
    console.print(f"serving {application.state.service.model.name} from {model} on "
                  f"http://{host}:{port} (docs: /docs)", highlight=False)
    if host in ("0.0.0.0", "::") and not allowed_host:
        console.print("note: only requests naming localhost, 127.0.0.1 or ::1 in their Host "
                      "header are answered; add this machine's public names with "
                      "--allowed-host NAME", highlight=False)
    _reload_on_sighup(application, model)
    gc.collect()
    gc.freeze()  # the loaded model's objects need no further GC scans: fewer latency spikes
    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)


def _reload_on_sighup(application: Any, model: Path) -> None:
    """SIGHUP reloads the model (``kill -HUP``), in a thread, off the signal handler; a
    reload that fails keeps the previous model serving."""
    def on_sighup(*_: object) -> None:
        def work() -> None:
            try:
                application.state.reload()
                log.warning("reloaded %s", model)
            except Exception as exc:  # keep serving the old model
                log.error("reload failed, still serving the previous model: %s", exc)

        threading.Thread(target=work, daemon=True).start()

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_sighup)


def _check_can_listen(host: str, port: int) -> None:
    """A clear error now for an address in use or a host that is not this machine's, where
    uvicorn would print its own and exit 3 after the banner."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: "
                              f"{(exc.strerror or str(exc)).lower()}") from None

