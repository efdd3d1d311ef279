"""``sightline search`` and ``sightline status``: query an index, and say what it holds."""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import click

from sightline.cli.options import handle_errors, json_option, with_settings
from sightline.search.errors import InvalidQueryError
from sightline.search.store_records import display_path


@click.command()
@click.argument("query", required=False)
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Find images similar to this image instead of a text query.")
@click.option("-k", "k", default=20, show_default=True, help="Number of results.")
@click.option("--offset", default=0, help="Skip this many results (pagination).")
@click.option("--min-score", type=float, default=None, help="Only results scoring at least this.")
@with_settings(onnx=True)
@json_option
@handle_errors
def search(query, image_path, k, offset, min_score, settings, as_json):
    """Search the index by text (QUERY) or by example (--image)."""
    from sightline.search.engine import SearchEngine
    from sightline.search.imageio import decode_image

    if (query is None) == (image_path is None):
        raise InvalidQueryError("give a text QUERY or --image PATH (exactly one)")
    engine = SearchEngine.open(dataclasses.replace(settings, single_query=True))
    try:
        if image_path is not None:
            image, _ = decode_image(image_path.read_bytes(), max_pixels=settings.max_pixels)
            hits = engine.search_image(image, k, offset, min_score)
        else:
            hits = engine.search_text(query, k, offset, min_score)
    finally:
        engine.close()
    if as_json:
        rows = [{"id": h.id, "path": display_path(h.path), "score": round(h.score, 6)} for h in hits]
        click.echo(json.dumps(rows, indent=2))
        return
    if not hits:
        click.echo("No results (is the index empty? see `sightline status`).", err=True)
    for h in hits:
        click.echo(f"{h.score:.4f}  {display_path(h.path)}")


@click.command()
@with_settings(faiss=False, model=False, precision=False, pixels=False)
@json_option
@handle_errors
def status(settings, as_json):
    """What the index holds: counts, model, size on disk, roots, last run, failed files, ONNX export."""
    from sightline.indexer.roots import describe_roots
    from sightline.search.engine import SearchEngine
    from sightline.search.onnx_files import export_status

    engine = SearchEngine.open(settings)
    try:
        info = engine.status()
        failures = engine.store.failures()
        info["roots"] = describe_roots(engine.store)
    finally:
        engine.close()
    info["failures"] = [{"path": display_path(f.path), "reason": f.reason} for f in failures]
    info["onnx"] = export_status(settings.index_dir, info["model"]) if info["model"] else None
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    _print_status(info)


def _print_status(info: dict) -> None:
    click.echo(f"Index:     {info['index']}")
    click.echo(f"Images:    {info['images']}")
    click.echo(f"Captions:  {info['captions']}")
    click.echo(f"Model:     {info['model'] or '(none yet)'}" + (f"  ({info['dim']}-d)" if info["dim"] else ""))
    click.echo(f"On disk:   {info['disk_bytes'] / 1e6:.1f} MB")
    if info["model"]:
        click.echo(f"Queries:   {_query_path(info['onnx'])}")
    from sightline.cli.roots import format_root

    for i, row in enumerate(info["roots"]):
        click.echo(f"{'Roots:' if i == 0 else '':<11}{format_root(row)}")
    run = info.get("last_run")
    if run:
        when = datetime.datetime.fromtimestamp(run["finished_at"] or run["started_at"]).isoformat(timespec="seconds")
        state = "finished" if run["finished_at"] else "interrupted"
        click.echo(f"Last run:  {when} ({state}) on {display_path(run['root'])}: {run['indexed']} indexed, "
                   f"{run['reused']} reused, {run['removed']} removed, {run['failed']} failed")
    if info["failures"]:
        click.echo(f"Failed:    {len(info['failures'])} file(s)")
        for f in info["failures"][:50]:
            click.echo(f"  {f['path']}: {f['reason']}")


def _query_path(onnx) -> str:
    if onnx is None:
        return "torch (no ONNX export yet: `sightline export` makes one)"
    towers = [t for t in ("text", "image") if onnx[t]]
    torch = [f"{t} on torch: {why}" for t, why in onnx["unsupported"].items()]
    return "; ".join([f"{' and '.join(towers)} on onnxruntime ({onnx['bytes'] / 1e6:.0f} MB export)"] * bool(towers)
                     + torch)
