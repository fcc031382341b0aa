"""``recforge datasets``: list, describe, download and generate datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from recforge.cli.common import check_out_file, console, status

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
        "as in MovieLens 20M: 138,000 at 20M, 6,900 at 1M)."),
    items: int = typer.Option(27_000, "--items", help="Number of items."),
    interactions: int = typer.Option(20_000_000, "--interactions",
                                     help="Number of (distinct user-item) events."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Generate interactions at scale (default: the size of MovieLens 20M) to Parquet.

    Zipf item popularity, log-normal user activity and genre tastes; columns user, item,
    rating, timestamp. Memory stays bounded whatever the size (written user block by block).
    """
    # lazy: 17 ms of imports that `recforge --help` does not need
    from recforge.data.synthetic import ML20M_EVENTS_PER_USER, write_synthetic_parquet

    check_out_file(out, "OUT")
    if users is None:
        users = max(2, round(interactions / ML20M_EVENTS_PER_USER))
    summary = write_synthetic_parquet(out, n_users=users, n_items=items,
                                      n_interactions=interactions, seed=seed)
    status(out).print(f"wrote {summary['events']:,} events ({users:,} users x {items:,} "
                       f"items) to {out} in {summary['seconds']:.1f}s "
                       f"({summary['bytes'] / 1e6:,.1f} MB)")

