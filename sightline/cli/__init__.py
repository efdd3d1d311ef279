"""The ``sightline`` command line.

A thin front end: it parses options, builds the library's settings from them
(:mod:`sightline.cli.options`), calls the library and formats results (human
text, or ``--json`` on stdout; progress and messages on stderr).  It is the
only part of Sightline that knows both the indexer and the web app.
"""

from __future__ import annotations

import os
import sys

import click

from sightline.cli.duplicates import duplicates
from sightline.cli.exporting import export_cmd
from sightline.cli.indexing import index
from sightline.cli.maintenance import repair
from sightline.cli.options import configure_logging
from sightline.cli.research import demo_cmd, eval_cmd, train_cmd
from sightline.cli.roots import roots
from sightline.cli.searching import search, status
from sightline.cli.serve import serve


#: Commands that only read: once they have answered, nothing is left to clean up.
READ_ONLY_COMMANDS = frozenset({"search", "status"})


class RunState:
    """What one run of the console script learns from the command line (``ctx.obj``)."""

    def __init__(self) -> None:
        self.read_only = False


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "SIGHTLINE"})
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.version_option(package_name="sightline")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Sightline: search your photos by text or by example."""
    configure_logging(verbose)
    if isinstance(ctx.obj, RunState):
        ctx.obj.read_only = ctx.invoked_subcommand in READ_ONLY_COMMANDS


def run() -> None:
    """The ``sightline`` console script (and ``python -m sightline``): :func:`main`, then exit.

    After a read-only command has answered and closed the index, the process
    ends without tearing the interpreter down: freeing every imported module
    and the model runtime's thread pools took 0.1–0.3 s, up to a third of a
    whole ``sightline search`` (``benchmarks/cli_search.py``).  Other commands,
    and ``main`` invoked in process (tests), exit normally.
    """
    state = RunState()
    try:
        main.main(prog_name="sightline", obj=state)
        code = 0
    except SystemExit as exc:
        code = exc.code
    if not state.read_only:
        sys.exit(code)
    status = code if isinstance(code, int) else (0 if code is None else 1)
    if not isinstance(code, (int, type(None))):
        print(code, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more can be written anyway
            status = status or 1
    os._exit(status)


for _command in (index, search, status, serve, export_cmd, eval_cmd, train_cmd, demo_cmd, repair, roots, duplicates):
    main.add_command(_command)
