"""``sightline serve``: the query server and browser UI (see :mod:`sightline.web`)."""

from __future__ import annotations

from pathlib import Path

import click

from sightline.cli.options import handle_errors, with_settings


@click.command()
@with_settings(onnx=True)
@click.option("--host", default="127.0.0.1", show_default=True, envvar="SIGHTLINE_HOST",
              help="Address to bind. Anything but loopback needs --token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), envvar="SIGHTLINE_PORT")
@click.option("--token", default=None, envvar="SIGHTLINE_TOKEN", metavar="SECRET",
              help="Access token required on every API call. [env: SIGHTLINE_TOKEN]")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=click.FloatRange(0.01, 1024),
              help="Largest accepted image upload; larger ones get 413.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Worker threads for inference, search and thumbnails.")
@click.option("--torch-threads", type=click.IntRange(0, 256), default=None,
              help="Threads per inference, for onnxruntime and torch (0: their default). [default: all CPU cores; "
                   "one inference runs at a time]")
@click.option("--thumbnail-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Thumbnail cache folder. [default: INDEX/thumbnails]")
@click.option("--refresh", "refresh_seconds", default=2.0, show_default=True,
              help="Seconds between checks for images a running `sightline index` added (0: never).")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log every request.")
@handle_errors
def serve(settings, host, port, token, max_upload_mb, threads, torch_threads, thumbnail_dir, refresh_seconds,
          access_log):
    """Serve the search UI and JSON API for an index (http://127.0.0.1:8000/ by default)."""
    import uvicorn

    from sightline.web.app import create_app
    from sightline.web.settings import ServerSettings

    with settings.open_store() as store:  # a missing index fails here, with the usual message
        images = store.counts()["images"]
    server = ServerSettings(
        settings, host=host, port=port, token=token or None, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        threads=threads, torch_threads=torch_threads, thumbnail_dir=thumbnail_dir, refresh_seconds=refresh_seconds,
    )
    app = create_app(server)  # checks the settings (token when exposed) before binding
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"Sightline: {images} image(s) in {settings.index_dir}; open http://{shown}:{port}/", err=True)
    if server.exposed:
        click.echo("Warning: reachable from other machines over plain HTTP; the token travels in clear. "
                   "Put a TLS proxy in front for anything beyond a trusted network.", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log,
                server_header=False, proxy_headers=False)
