"""``sightline repair``: check an index and rebuild what can be rebuilt.

The FAISS files are caches of the embeddings stored in SQLite, so they can
always be rebuilt; a damaged database cannot, and is reported with its path.
The library work is in :mod:`sightline.indexer.repair`.
"""

from __future__ import annotations

import json
import sys

import click

from sightline.cli.options import handle_errors, json_option, with_settings


@click.command()
@with_settings(model=False, precision=False, pixels=False)
@click.option("--check", is_flag=True, help="Only check; change nothing (exit status 1 if anything is damaged).")
@json_option
@handle_errors
def repair(settings, check, as_json):
    """Check the index (database integrity, stored embeddings, FAISS files) and repair it.

    FAISS files that are damaged or behind the database are rebuilt from the
    stored embeddings; images whose stored embedding is damaged are dropped so
    that the next `sightline index` embeds them again.  Refused while an
    `index` run holds the index.
    """
    from sightline.indexer.repair import repair as run_repair
    from sightline.indexer.repair import verify

    if check:
        with settings.open_store() as store:
            report = verify(store)
    else:
        with settings.open_store() as store:
            report = run_repair(store)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print(report, check)
    if not report.ok:
        sys.exit(1)


def _print(report, check: bool) -> None:
    click.echo(f"Index:     {report.index}")
    click.echo(f"Checked:   {report.images} image(s), {report.captions} caption(s)")
    for message in report.repaired:
        click.echo(f"Repaired:  {message}")
    for problem in report.problems:
        click.echo(f"{problem.severity.capitalize() + ':':<11}{problem.where}: {problem.message}")
    if report.ok and not report.problems:
        click.echo("The index is healthy." if check or not report.repaired else "The index is healthy again.")
    elif report.ok:
        click.echo("No damage (caches that lag behind the database catch up on their own).")
    else:
        click.echo("Damage found." + (" Run `sightline repair` to fix it." if check else ""))
