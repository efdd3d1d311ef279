"""``sightline duplicates``: exact and near-duplicate photos, best copy first; ``--move-to`` sets copies aside."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from sightline.cli.options import handle_errors, json_option, with_settings
from sightline.search.duplicates import DEFAULT_THRESHOLD, MIN_THRESHOLD
from sightline.search.store_records import display_path


@click.command()
@click.option("--threshold", type=click.FloatRange(MIN_THRESHOLD, 1.0), default=DEFAULT_THRESHOLD, show_default=True,
              metavar="COS", envvar="SIGHTLINE_DUPLICATE_THRESHOLD",
              help="Cosine similarity from which two photos count as near duplicates (lower finds more, and more "
                   "merely similar photos). [env: SIGHTLINE_DUPLICATE_THRESHOLD]")
@click.option("--exact-only", is_flag=True, help="Only identical files (the same content under several paths).")
@click.option("--folder", type=click.Path(path_type=Path), default=None,
              help="Only compare the indexed files under this folder.")
@click.option("--move-to", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Move all but the first (best) file of each group into DIR (keeping their folders below it); "
                   "the index follows. Nothing is ever deleted.")
@with_settings(faiss=False, model=False, precision=False, pixels=False)
@json_option
@handle_errors
def duplicates(threshold, exact_only, folder, move_to, settings, as_json):
    """List groups of duplicate photos: exact copies and near copies (resized, re-encoded,
    lightly cropped or edited), each with its files best quality first."""
    from sightline.search.duplicates import find_duplicates

    with settings.open_store() as store:
        folder = os.path.abspath(folder) if folder is not None else None
        groups = find_duplicates(store, threshold, exact_only, folder) if store.model_info() else []
        moved = {}
        if move_to is not None and groups:
            from sightline.indexer.dedupe import move_extras

            moved = {m.file.id: m for m in move_extras(store, groups, move_to)}
    if as_json:
        rows = [g.as_dict() for g in groups]
        if move_to is not None:
            for row in rows:
                for f in row["files"]:
                    m = moved.get(f["id"])
                    f["moved_to"] = display_path(m.to) if m and m.to else None
                    if m and m.reason:
                        f["not_moved"] = m.reason
        for row in rows:
            for f in row["files"]:
                f["path"] = display_path(f["path"])
        click.echo(json.dumps(rows, indent=2))
        return
    _print(groups, moved)


def _print(groups, moved) -> None:
    if not groups:
        click.echo("No duplicates found.", err=True)
        return
    for n, group in enumerate(groups, 1):
        click.echo(f"Group {n}: {group.kind}, score {group.score:.4f}, {len(group.files)} files, "
                   f"{_bytes(group.reclaimable_bytes)} in the copies")
        for i, f in enumerate(group.files):
            mark = "keep" if i == 0 else f"{f.similarity:.4f}"
            taken = f.taken_at or "-"
            click.echo(f"  {mark:>6}  {f.width}x{f.height}  {_bytes(f.size):>9}  {taken:<19}  "
                       f"{display_path(os.path.dirname(f.path))}/  {display_path(os.path.basename(f.path))}")
            m = moved.get(f.id)
            if m is not None:
                click.echo(f"          -> {display_path(m.to)}" if m.to else f"          not moved: {m.reason}")
    total = sum(g.reclaimable_bytes for g in groups)
    click.echo(f"{len(groups)} group(s); the copies take {_bytes(total)}.", err=True)


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
