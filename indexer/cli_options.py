"""Options shared by several ``sightline`` commands, and error handling.

Every option has a ``SIGHTLINE_*`` environment variable; library errors
(:class:`search.errors.SightlineError`) become one-line messages and exit
codes here, never stack traces.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import click

from search.errors import SightlineError


def default_index_dir() -> Path:
    """``$SIGHTLINE_INDEX``, else the platform's user data dir (e.g. ~/.local/share/sightline/index)."""
    env = os.environ.get("SIGHTLINE_INDEX")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("sightline", appauthor=False)) / "index"


index_option = click.option(
    "--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Index folder. [env: SIGHTLINE_INDEX; default: the user data dir]",
)
model_option = click.option(
    "--model", "model_name", default=None, metavar="NAME",
    help="open_clip model name, or a model config JSON file. [env: SIGHTLINE_MODEL; default: ViT-B-32]",
)
pretrained_option = click.option(
    "--pretrained", default=None, metavar="TAG_OR_FILE",
    help="Pretrained tag, or a local checkpoint file (open_clip state_dict or Sightline checkpoint). "
         "[env: SIGHTLINE_PRETRAINED; default: laion2b_s34b_b79k]",
)
device_option = click.option(
    "--device", default=None, envvar="SIGHTLINE_DEVICE", help="torch device (default: cuda if available, else cpu).",
)


def _export_precision(ctx, param, value):
    # Every command that loads a model reads SIGHTLINE_PRECISION through
    # search.models.load_encoder, so the option only has to set it.
    if value:
        os.environ["SIGHTLINE_PRECISION"] = value
    return value


precision_option = click.option(
    "--precision", type=click.Choice(["auto", "fp32", "bf16"], case_sensitive=False), default=None,
    envvar="SIGHTLINE_PRECISION", expose_value=False, callback=_export_precision,
    help="Number format of the model: bf16 is ~2x faster on CPUs with native bf16 and within cosine 0.9999 "
         "of fp32. [env: SIGHTLINE_PRECISION; default: auto = bf16 where the hardware has it, else fp32]",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def model_options(func):
    return model_option(pretrained_option(device_option(precision_option(func))))


def resolve_index(index_dir: Path | None) -> Path:
    return index_dir if index_dir is not None else default_index_dir()


def handle_errors(func):
    """Turn library errors into a message on stderr and the error's exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SightlineError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    return wrapper


def configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if verbose == 0:
        # open_clip and huggingface_hub narrate loading (and failed downloads)
        # themselves; our own error message says what matters, once.
        handler.addFilter(lambda record: record.name != "root" and not record.name.startswith("huggingface_hub"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
