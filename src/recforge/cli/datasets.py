"""``recforge datasets``: list, describe, download and generate datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from recforge.cli.common import check_out_file, console, status
from recforge.errors import ConfigError

datasets_app = typer.Typer(no_args_is_help=True, help="List, describe and download datasets.")


@datasets_app.command("list")
def datasets_list() -> None:
    """List the datasets recforge knows by name."""
    from recforge.data.movielens import find_local, list_datasets  # lazy: downloader, 40 ms

    table = Table(title="Datasets")
    for c in ("name", "ratings", "users", "items", "metadata", "local copy"):
        table.add_column(c, overflow="fold")  # names and paths wrap, never cut
    for spec in list_datasets():
        meta = ["titles", "genres"]
        if spec.has_tags:
            meta.append("tags")
        if spec.has_user_features:
            meta.append("user features")
        local = find_local(spec.name)
        table.add_row(spec.name, f"{spec.n_ratings:,}", f"{spec.n_users:,}", f"{spec.n_items:,}",
                      ", ".join(meta), str(local) if local else "-")
    table.add_row("synthetic", "~50,000", "1,000", "800", "titles, genres", "(generated)")
    console.print(table)


@datasets_app.command("info")
def datasets_info(name: str) -> None:
    """Describe one dataset: source, size, checksum, where a local copy was found."""
    from recforge.data.movielens import find_local, get_spec  # lazy: downloader, 40 ms

    spec = get_spec(name)
    local = find_local(spec.name)
    console.print(f"[bold]{spec.name}[/bold]: {spec.description}")
    console.print(f"  url:      {spec.url}")
    console.print(f"  md5:      {spec.md5 or '(none pinned)'}")
    console.print(f"  checks:   {spec.checks}")
    console.print(f"  ratings:  {spec.n_ratings:,} by {spec.n_users:,} users on "
                  f"{spec.n_items:,} items")
    console.print(f"  local:    {local or 'not found (recforge datasets download ' + spec.name + ')'}")


@datasets_app.command("download")
def datasets_download(name: str,
                      force: bool = typer.Option(False, help="Download again even if cached."),
                      ) -> None:
    """Download a dataset into the cache (RECFORGE_CACHE_DIR, default ~/.cache/recforge)."""
    from recforge.data.movielens import fetch_movielens  # lazy: downloader, 40 ms

    got = fetch_movielens(name, force=force)
    if got.verified is None:
        console.print(f"{name} is already in {got.path} (not downloaded or checked again; "
                      "--force does both)")
        return
    console.print(f"{name} is in {got.path}; verified: {got.verified.describe()}")
    if not got.verified.pinned:
        console.print("[yellow]warning:[/yellow] nothing was checked against a checksum "
                      "recforge pins: the files are as the server sent them")


@datasets_app.command("generate")
def datasets_generate(
    out: Path = typer.Argument(..., help="Parquet file to write (- for standard output)."),
    users: int | None = typer.Option(
        None, "--users", help="Number of users (default: in proportion to --interactions, "
        "as in MovieLens 20M: 138,000 at 20M, 6,900 at 1M; with --ordered 10,000)."),
    items: int | None = typer.Option(
        None, "--items", help="Number of items (default 27,000; with --ordered 10,000)."),
    interactions: int | None = typer.Option(
        None, "--interactions", help="Number of (distinct user-item) events (default "
        "20,000,000; not with --ordered, where --mean-length sets the size)."),
    ordered: bool = typer.Option(
        False, "--ordered", help="An ordered log for next-item and session models: items "
        "follow each other (sequels, topics), histories log-normal around --mean-length."),
    mean_length: float = typer.Option(12.0, "--mean-length",
                                      help="With --ordered: mean items per user."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Generate interactions at scale (default: the size of MovieLens 20M) to Parquet.

    Zipf item popularity, log-normal user activity and genre tastes; columns user, item,
    rating, timestamp. Memory stays bounded whatever the size (written user block by block).
    With --ordered: a log whose order carries signal (columns user, item, timestamp; see
    recforge.data.synthetic.make_sequential), built in memory.
    """
    # lazy: 17 ms of imports that `recforge --help` does not need
    from recforge.data.synthetic import (
        ML20M_EVENTS_PER_USER,
        write_sequential_parquet,
        write_synthetic_parquet,
    )

    check_out_file(out, "OUT")
    if ordered:
        if interactions is not None:
            raise ConfigError("--interactions does not apply to --ordered: its size is "
                              "--users x --mean-length")
        users = 10_000 if users is None else users
        items = 10_000 if items is None else items
        # in memory, with one padded row per user and a repeat check per position that
        # grows with the square of a history's length: bounded so it cannot swap or hang
        if users * mean_length > 5_000_000 or mean_length > 500 or items > 10_000_000:
            raise ConfigError(f"--ordered builds the log in memory: at most 5,000,000 "
                              f"events (--users x --mean-length), --mean-length 500 and "
                              f"10,000,000 --items, got {users:,} x {mean_length:g} and "
                              f"{items:,}")
        summary = write_sequential_parquet(out, n_users=users, n_items=items,
                                           mean_length=mean_length, seed=seed)
    else:
        interactions = 20_000_000 if interactions is None else interactions
        items = 27_000 if items is None else items
        if users is None:
            users = max(2, round(interactions / ML20M_EVENTS_PER_USER))
        summary = write_synthetic_parquet(out, n_users=users, n_items=items,
                                          n_interactions=interactions, seed=seed)
    status(out).print(f"wrote {summary['events']:,} events ({users:,} users x {items:,} "
                       f"items) to {out} in {summary['seconds']:.1f}s "
                       f"({summary['bytes'] / 1e6:,.1f} MB)")
