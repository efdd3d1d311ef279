"""``sightline index``: index a photo folder (incrementally), with its captions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from sightline.cli.options import handle_errors, json_option, with_settings, workers_option
from sightline.search.store_records import display_path


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@with_settings()
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), envvar="SIGHTLINE_BATCH_SIZE",
              help="Images per model batch (and per database commit). [env: SIGHTLINE_BATCH_SIZE]")
@workers_option
@click.option("--no-draft", is_flag=True, help="Always decode JPEGs at full size (slower; for comparisons).")
@click.option("--captions", "captions_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Captions for the images (Karpathy JSON, Flickr30k CSV, or CSV/JSONL of image,caption; image "
                   "paths relative to PATH). Sidecar PHOTO.txt files (one caption per line) are always read.")
@click.option("--export/--no-export", "export", default=True, show_default=True, envvar="SIGHTLINE_EXPORT",
              help="Export the model to ONNX in the index folder (once per model, after embedding), so that "
                   "searches run without torch. [env: SIGHTLINE_EXPORT]")
@click.option("--ray", "ray_address", default=None, metavar="local|auto|ADDRESS", envvar="SIGHTLINE_RAY",
              help="Decode and embed on Ray: 'local' (this machine), 'auto' (the cluster this machine joined with "
                   "`ray start`) or a cluster address; the database is written here. [env: SIGHTLINE_RAY]")
@click.option("--ray-embedders", type=click.IntRange(1), default=None,
              help="Embedding actors on Ray. [default: one per GPU, else one]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@handle_errors
def index(path, settings, batch_size, workers, no_draft, captions_file, export, ray_address, ray_embedders, quiet,
          as_json):
    """Index the images under PATH (incremental: only new or changed files are embedded)."""
    from sightline.indexer.captions import caption_run
    from sightline.indexer.pipeline import IndexJob
    from sightline.search.models import model_id_for
    from sightline.search.onnx_export import export_after_indexing, needs_export

    with settings.open_store(create=True) as store:
        # The model loads only if something needs embedding.
        job = IndexJob(store, settings.encoder_factory(store), model_id=model_id_for(settings.spec_for(store)),
                       batch_size=batch_size, workers=workers, progress=not quiet and not as_json,
                       use_draft=not no_draft, max_pixels=settings.max_pixels,
                       ray=_ray_plan(ray_address, ray_embedders, batch_size, settings, store))
        report = job.run(str(path))
        captions_added = caption_run(store, lambda: job.encoder, path, captions_file)
        export_s = None
        # Only when the model is loaded anyway: a rescan with nothing new never loads torch for it.
        if export and job.encoder_loaded and needs_export(store.root, job.encoder.model_id):
            if not as_json:
                click.echo("Exporting the model to ONNX for torch-free searches (once per model)...", err=True)
            started = time.perf_counter()
            if export_after_indexing(store.root, job.encoder) is not None:
                export_s = round(time.perf_counter() - started, 2)
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "captions_added": captions_added, "onnx_export_s": export_s},
                              indent=2))
    else:
        _print_report(report)
        if captions_added:
            click.echo(f"Added {captions_added} caption(s).", err=True)
        if export_s is not None:
            click.echo(f"Exported the model to ONNX in {export_s:.1f} s.", err=True)


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


def _ray_plan(address, embedders, batch_size, settings, store):
    """(RayOptions, EncoderRecipe) for IndexJob, or None to decode and embed in this process."""
    if not address:
        return None
    from sightline.indexer.ray_embed import EncoderRecipe, RayOptions

    return (RayOptions(address, batch_size=batch_size, embedders=embedders),
            EncoderRecipe(settings.spec_for(store), settings.precision, settings.device))
