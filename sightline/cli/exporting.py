"""``sightline export``: the index's model as ONNX, so that searches run without torch."""

from __future__ import annotations

import json

import click

from sightline.cli.options import handle_errors, json_option, with_settings


@click.command("export")
@with_settings(faiss=False, precision=False, pixels=False)
@click.option("--force", is_flag=True, help="Export again even if the index has an export of its model.")
@json_option
@handle_errors
def export_cmd(settings, force, as_json):
    """Export the index's model to ONNX in the index folder (INDEX/onnx/).

    `sightline search` and `sightline serve` then answer with onnxruntime and
    never import torch.  `sightline index` does this itself after embedding
    new photos; this command is for indexes made before, or to redo it
    (--force).  A tower whose architecture the export does not cover keeps
    using torch; the output says which and why.
    """
    from sightline.search.onnx_export import export_index

    manifest = export_index(settings, force=force)
    towers = {tower: getattr(manifest, tower) is not None for tower in ("text", "image")}
    if as_json:
        click.echo(json.dumps({"model": manifest.model_id, "folder": str(manifest.folder), **towers,
                               "unsupported": manifest.unsupported, "bytes": sum(manifest.files.values()),
                               "info": manifest.info}, indent=2))
        return
    click.echo(f"ONNX export of {manifest.model_id} in {manifest.folder} "
               f"({sum(manifest.files.values()) / 1e6:.0f} MB):")
    for tower, exported in towers.items():
        state = "onnxruntime" if exported else f"torch ({manifest.unsupported.get(tower, 'not exported')})"
        click.echo(f"  {tower} queries: {state}")
