"""The ``sightline`` command line.

A thin front end: it parses options, builds the library's settings from them
(:mod:`sightline.cli.options`), calls the library and formats results (human
text, or ``--json`` on stdout; progress and messages on stderr).  It is the
only part of Sightline that knows both the indexer and the web app.
"""

from __future__ import annotations

import click

from sightline.cli.duplicates import duplicates
from sightline.cli.indexing import index
from sightline.cli.maintenance import repair
from sightline.cli.options import configure_logging
from sightline.cli.research import demo_cmd, eval_cmd, train_cmd
from sightline.cli.roots import roots
from sightline.cli.searching import search, status
from sightline.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "SIGHTLINE"})
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.version_option(package_name="sightline")
def main(verbose: int) -> None:
    """Sightline: search your photos by text or by example."""
    configure_logging(verbose)


for _command in (index, search, status, serve, eval_cmd, train_cmd, demo_cmd, repair, roots, duplicates):
    main.add_command(_command)
