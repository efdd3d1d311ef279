"""The ``sightline`` command line.

A thin front end: it parses options, calls the library and formats results
(human text, or ``--json`` on stdout).  Errors from the library become
one-line messages and exit codes in :func:`indexer.cli_options.handle_errors`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click

from indexer.cli_options import (
    configure_logging,
    handle_errors,
    index_option,
    json_option,
    model_options,
    resolve_index,
)
from search.errors import InvalidQueryError
from search.models import ModelSpec
from search.store_records import display_path


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "SIGHTLINE"})
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.version_option(package_name="sightline")
def main(verbose: int) -> None:
    """Sightline: search your photos by text or by example."""
    configure_logging(verbose)


def _spec_for(index_dir: Path, model_name: Optional[str], pretrained: Optional[str]) -> ModelSpec:
    """Flags/env win; otherwise an existing index keeps the model it was built with."""
    import os

    from search.errors import IndexNotFoundError
    from search.store import Store

    explicit = model_name or pretrained or os.environ.get("SIGHTLINE_MODEL") or os.environ.get("SIGHTLINE_PRETRAINED")
    if not explicit:
        try:
            with Store.open(index_dir) as store:
                info = store.model_info()
            if info is not None:
                return ModelSpec(info.name or None, info.pretrained or None)
        except IndexNotFoundError:
            pass
    return ModelSpec.from_env(model_name, pretrained)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@index_option
@model_options
@click.option("--batch-size", default=32, show_default=True, envvar="SIGHTLINE_BATCH_SIZE",
              help="Images per model batch (and per database commit).")
@click.option("--workers", type=int, default=None, envvar="SIGHTLINE_WORKERS",
              help="Decode worker processes (0: decode in the main process). [default: CPU count]")
@click.option("--no-draft", is_flag=True, help="Always decode JPEGs at full size (slower; for comparisons).")
@click.option("--captions", "captions_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Captions for the images (Karpathy JSON, Flickr30k CSV, or CSV/JSONL of image,caption; image "
                   "paths relative to PATH). Sidecar PHOTO.txt files (one caption per line) are always read.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@handle_errors
def index(path, index_dir, model_name, pretrained, device, batch_size, workers, no_draft, captions_file, quiet,
          as_json):
    """Index the images under PATH (incremental: only new or changed files are embedded)."""
    from indexer.pipeline import IndexJob
    from search.models import load_encoder, model_id_for
    from search.store import Store

    index_dir = resolve_index(index_dir)
    spec = _spec_for(index_dir, model_name, pretrained)
    with Store.open(index_dir, create=True) as store:
        # The model loads only if something needs embedding.
        job = IndexJob(store, lambda: load_encoder(spec, device), model_id=model_id_for(spec),
                       batch_size=batch_size, workers=workers, progress=not quiet and not as_json,
                       use_draft=not no_draft)
        report = job.run(str(path))
        from indexer.captions import caption_run

        captions_added = caption_run(store, lambda: job.encoder, path, captions_file)
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "captions_added": captions_added}, indent=2))
    else:
        _print_report(report)
        if captions_added:
            click.echo(f"Added {captions_added} caption(s).", err=True)


def _print_report(report) -> None:
    echo = lambda msg: click.echo(msg, err=True)  # noqa: E731 - summary goes to stderr
    echo(f"Indexed {report.indexed} new image(s) in {report.seconds:.1f} s "
         f"({report.images_per_second:.1f} img/s); reused {report.reused} known, "
         f"{report.unchanged} unchanged, {report.touched} touched, removed {report.removed}.")
    if report.still_failing:
        echo(f"{report.still_failing} file(s) failed before and have not changed; not retried "
             f"(see `sightline status`).")
    if report.failed:
        echo(f"{len(report.failed)} file(s) failed:")
        for failure in report.failed[:50]:
            echo(f"  {display_path(failure.path)}: {failure.reason}")
        if len(report.failed) > 50:
            echo(f"  ... and {len(report.failed) - 50} more (`sightline status --json` lists all)")


@main.command()
@click.argument("query", required=False)
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Find images similar to this image instead of a text query.")
@click.option("-k", "k", default=20, show_default=True, help="Number of results.")
@click.option("--offset", default=0, help="Skip this many results (pagination).")
@click.option("--min-score", type=float, default=None, help="Only results scoring at least this.")
@index_option
@model_options
@json_option
@handle_errors
def search(query, image_path, k, offset, min_score, index_dir, model_name, pretrained, device, as_json):
    """Search the index by text (QUERY) or by example (--image)."""
    from search.engine import SearchEngine
    from search.imageio import decode_image

    if (query is None) == (image_path is None):
        raise InvalidQueryError("give a text QUERY or --image PATH (exactly one)")
    spec = ModelSpec(model_name, pretrained) if (model_name or pretrained) else None
    engine = SearchEngine.open(resolve_index(index_dir), spec, device)
    try:
        if image_path is not None:
            image, _ = decode_image(image_path.read_bytes())
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


@main.command()
@index_option
@json_option
@handle_errors
def status(index_dir, as_json):
    """What the index holds: counts, model, size on disk, last run, failed files."""
    from search.engine import SearchEngine

    engine = SearchEngine.open(resolve_index(index_dir))
    try:
        info = engine.status()
        failures = engine.store.failures()
    finally:
        engine.close()
    info["failures"] = [{"path": display_path(f.path), "reason": f.reason} for f in failures]
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
    run = info.get("last_run")
    if run:
        import datetime

        when = datetime.datetime.fromtimestamp(run["finished_at"] or run["started_at"]).isoformat(timespec="seconds")
        state = "finished" if run["finished_at"] else "interrupted"
        click.echo(f"Last run:  {when} ({state}) on {display_path(run['root'])}: {run['indexed']} indexed, "
                   f"{run['reused']} reused, {run['removed']} removed, {run['failed']} failed")
    if info["failures"]:
        click.echo(f"Failed:    {len(info['failures'])} file(s)")
        for f in info["failures"][:50]:
            click.echo(f"  {f['path']}: {f['reason']}")


# --- subcommands from other modules ---
from indexer.cli_serve import serve; main.add_command(serve)  # noqa: E402,E702
from indexer.cli_research import demo_cmd, eval_cmd, train_cmd; [main.add_command(c) for c in (eval_cmd, train_cmd, demo_cmd)]  # noqa: E402,E501,E702
from indexer.cli_maintenance import repair; main.add_command(repair)  # noqa: E402,E702


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
