"""``sightline roots``: the folders an index covers; ``roots remove PATH`` forgets one."""

from __future__ import annotations

import datetime
import json

import click

from sightline.cli.options import handle_errors, json_option, with_settings


@click.group(invoke_without_command=True)
@with_settings(faiss=False, model=False, precision=False, pixels=False)
@json_option
@click.pass_context
@handle_errors
def roots(ctx, settings, as_json):
    """List the index's roots (the folders `sightline index` remembers) with their photo
    counts, exclusions and state (ok, missing, empty, other device)."""
    if ctx.invoked_subcommand is not None:
        return
    from sightline.indexer.roots import describe_roots

    with settings.open_store() as store:
        rows = describe_roots(store)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No roots yet: `sightline index PHOTO_FOLDER` adds one.", err=True)
    for row in rows:
        click.echo(format_root(row))


def format_root(row: dict) -> str:
    when = (datetime.datetime.fromtimestamp(row["indexed_at"]).isoformat(timespec="seconds")
            if row["indexed_at"] else "never")
    excludes = f"  excludes {', '.join(row['excludes'])}" if row["excludes"] else ""
    return f"{row['path']}  {row['photos']} photo(s)  {row['state']}  indexed {when}{excludes}"


@roots.command("remove")
@click.argument("path", type=click.Path(path_type=str))
@with_settings(faiss=False, model=False, precision=False, pixels=False)
@json_option
@handle_errors
def remove(path, settings, as_json):
    """Forget the root PATH and remove its photos from the index (the files stay where they are)."""
    from sightline.indexer.roots import remove_root

    with settings.open_store() as store:
        removed = remove_root(store, path)
    if as_json:
        click.echo(json.dumps({"root": path, "removed": removed}))
    else:
        click.echo(f"Forgot {path}; removed {removed} photo(s) from the index.", err=True)
