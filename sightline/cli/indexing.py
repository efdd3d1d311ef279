"""``sightline index``: index photo folders (incrementally), with their captions; ``--watch`` keeps going."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from sightline.cli.options import handle_errors, json_option, with_settings, workers_option
from sightline.search.errors import ConfigurationError
from sightline.search.store_records import display_path


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@with_settings()
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB",
              help="Leave out files whose full path matches GLOB (repeatable; e.g. '*/private/*', '*.tmp'). "
                   "Remembered per root: it replaces the root's globs, and later runs reuse them.")
@click.option("--clear-excludes", is_flag=True, help="Forget the remembered --exclude globs of these roots.")
@click.option("--prune", is_flag=True,
              help="Also remove the photos of roots that are missing, empty or on another device "
                   "(normally kept, with exit code 20, 21 or 22).")
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
@click.option("--watch", is_flag=True, help="After indexing, keep watching the folders and apply changes as "
                                            "they happen (Ctrl-C or SIGTERM stops, exit 0).")
@click.option("--poll", is_flag=True, envvar="SIGHTLINE_WATCH_POLL",
              help="With --watch: poll the folders instead of waiting for file events (network shares). "
                   "[env: SIGHTLINE_WATCH_POLL]")
@click.option("--poll-interval", type=click.FloatRange(0.1), default=5.0, show_default=True, metavar="SECONDS",
              envvar="SIGHTLINE_WATCH_POLL_INTERVAL", help="With --poll: seconds between scans. "
                                                           "[env: SIGHTLINE_WATCH_POLL_INTERVAL]")
@click.option("--debounce", type=click.FloatRange(0.05), default=1.0, show_default=True, metavar="SECONDS",
              envvar="SIGHTLINE_WATCH_DEBOUNCE",
              help="With --watch: a burst of changes is applied once it has been quiet this long. "
                   "[env: SIGHTLINE_WATCH_DEBOUNCE]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@handle_errors
def index(paths, settings, excludes, clear_excludes, prune, batch_size, workers, no_draft, captions_file, export,
          ray_address, ray_embedders, watch, poll, poll_interval, debounce, quiet, as_json):
    """Index the images under each PATH (folders or files), remembered as the index's roots.

    Incremental: only new or changed files are embedded.  Without PATH, every
    remembered root is indexed again.  Photos that disappeared are removed,
    but only under the roots of this run, and never under a root that is
    missing, empty or on another device (an unmounted disk): those are kept and
    the exit code says so (20 missing, 21 empty, 22 other device).
    """
    from sightline.indexer.captions import caption_run
    from sightline.indexer.pipeline import IndexJob
    from sightline.search.models import model_id_for

    if captions_file is not None and len(paths) != 1:
        raise ConfigurationError("--captions needs exactly one PATH (its image paths are relative to it)")
    import os

    scopes = [os.path.abspath(p) for p in paths] or None  # on a database server, other roots' writers run meanwhile
    with settings.open_store(create=True) as store, store.writer(scopes=scopes):
        # The model loads only if something needs embedding.
        job = IndexJob(store, settings.encoder_factory(store), model_id=model_id_for(settings.spec_for(store)),
                       batch_size=batch_size, workers=workers, progress=not quiet and not as_json and not watch,
                       use_draft=not no_draft, max_pixels=settings.max_pixels,
                       ray=_ray_plan(ray_address, ray_embedders, batch_size, settings, store))
        watcher = _watcher(job, store, paths, poll, poll_interval, debounce, as_json) if watch else None
        try:
            report = job.run([str(p) for p in paths], excludes=list(excludes) if excludes else None,
                             clear_excludes=clear_excludes, prune=prune)
            captions_added = 0
            for i, scope in enumerate([str(p) for p in paths] or report.roots):
                captions_added += caption_run(store, lambda: job.encoder, scope, captions_file if i == 0 else None)
            export_s = _export(job, store, as_json) if export else None
            _report(report, captions_added, export_s, as_json, one_line=watcher is not None)
            if watcher is None:
                if report.exit_error is not None:
                    sys.exit(report.exit_error.exit_code)
                return
            click.echo(f"Watching {len(watcher.scopes)} folder(s) for changes (Ctrl-C to stop)...", err=True)
            try:
                watcher.loop()
            except KeyboardInterrupt:
                click.echo("Stopped watching; the index is up to date with what was applied.", err=True)
        finally:
            if watcher is not None:
                watcher.close()


def _watcher(job, store, paths, poll, poll_interval, debounce, as_json):
    from sightline.indexer.watch import Watcher, WatchOptions

    scopes = [str(p) for p in paths] or [r.path for r in store.roots.all()]
    options = WatchOptions(debounce_s=debounce, poll=poll, poll_interval_s=poll_interval)
    watcher = Watcher(job, scopes, options, on_batch=lambda b: _batch_line(b, as_json),
                      on_root=lambda path, health: click.echo(
                          f"{time.strftime('%H:%M:%S')} {display_path(path)}: "
                          f"{'back, re-scanning' if health.value == 'ok' else health.value + '; its photos are kept'}",
                          err=True))
    watcher.start()
    return watcher


def _batch_line(batch, as_json: bool) -> None:
    r = batch.report
    if as_json:  # one JSON object per line and batch
        click.echo(json.dumps({"time": time.time(), "paths": batch.paths, "moved": batch.moved,
                               "captions_added": batch.captions, **r.as_dict()}))
        return
    failed = f", {len(r.failed)} failed" if r.failed else ""
    click.echo(f"{time.strftime('%H:%M:%S')} {r.indexed} new, {r.reused} reused, {r.touched} touched, "
               f"{batch.moved} moved, {r.removed} removed{failed} ({batch.seconds:.2f} s)", err=True)
    for failure in r.failed[:10]:
        click.echo(f"  {display_path(failure.path)}: {failure.reason}", err=True)
    for held in r.held:
        if held.kept:
            click.echo(f"  Warning: {held.error}", err=True)


def _export(job, store, as_json: bool):
    """Seconds the ONNX export took, or None when none was made (only when the model is loaded
    anyway: a rescan with nothing new never loads torch for it)."""
    from sightline.search.onnx_export import export_after_indexing, needs_export

    if not job.encoder_loaded or not needs_export(store.root, job.encoder.model_id):
        return None
    if not as_json:
        click.echo("Exporting the model to ONNX for torch-free searches (once per model)...", err=True)
    started = time.perf_counter()
    if export_after_indexing(store.root, job.encoder) is None:
        return None
    return round(time.perf_counter() - started, 2)


def _report(report, captions_added: int, export_s, as_json: bool, one_line: bool) -> None:
    if as_json:  # with --watch, batches follow as one JSON object per line: so does this one
        click.echo(json.dumps({**report.as_dict(), "captions_added": captions_added, "onnx_export_s": export_s},
                              indent=None if one_line else 2))
    else:
        _print_report(report)
        if captions_added:
            click.echo(f"Added {captions_added} caption(s).", err=True)
        if export_s is not None:
            click.echo(f"Exported the model to ONNX in {export_s:.1f} s.", err=True)
    for held in report.held:
        click.echo(f"Warning: {held.error}", err=True)


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
