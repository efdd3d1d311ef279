"""Options shared by several ``sightline`` commands, the settings they make, and error handling.

Each setting is declared here once, with its ``SIGHTLINE_*`` environment
variable; :func:`with_settings` adds the options a command needs and hands
the command one :class:`~sightline.search.settings.Settings` built from them.
This is the only place environment variables become settings: the library
takes plain arguments.  Library errors
(:class:`~sightline.search.errors.SightlineError`) become one-line messages and
exit codes in :func:`handle_errors`, never stack traces.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import click

from sightline.search.errors import SightlineError
from sightline.search.imageio import DEFAULT_MAX_PIXELS
from sightline.search.models import ModelSpec
from sightline.search.settings import Settings

#: Exit status of a command stopped by Ctrl-C (SIGINT) or SIGTERM: 128 + the signal's number.
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C, so that the same cleanup runs:
    the batch in flight is lost, everything committed stays, the writer lock is released."""


def default_index_dir() -> Path:
    """The platform's user data dir (e.g. ~/.local/share/sightline/index)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("sightline", appauthor=False)) / "index"


_INDEX = [
    click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 envvar="SIGHTLINE_INDEX",
                 help="Index folder (with --db: the local folder for thumbnails and model exports). "
                      "[env: SIGHTLINE_INDEX; default: the user data dir]"),
    click.option("--db", "db_url", default=None, metavar="URL", envvar="SIGHTLINE_DB",
                 help="Keep the index in a PostgreSQL database with pgvector instead of the folder, e.g. "
                      "postgresql+psycopg://user@host/photos. [env: SIGHTLINE_DB]"),
]
_FAISS = [
    click.option("--faiss-index", default=None, metavar="FACTORY", envvar="SIGHTLINE_FAISS_INDEX",
                 help="FAISS index-factory string instead of the automatic choice (e.g. HNSW32). "
                      "[env: SIGHTLINE_FAISS_INDEX]"),
]
_MODEL = [
    click.option("--model", "model_name", default=None, metavar="NAME", envvar="SIGHTLINE_MODEL",
                 help="open_clip model name, or a model config JSON file. "
                      "[env: SIGHTLINE_MODEL; default: the index's own model, else ViT-B-32]"),
    click.option("--pretrained", default=None, metavar="TAG_OR_FILE", envvar="SIGHTLINE_PRETRAINED",
                 help="Pretrained tag, or a local checkpoint file (open_clip state_dict or Sightline checkpoint). "
                      "[env: SIGHTLINE_PRETRAINED; default: the index's own, else laion2b_s34b_b79k]"),
    click.option("--device", default=None, envvar="SIGHTLINE_DEVICE",
                 help="torch device. [env: SIGHTLINE_DEVICE; default: cuda if available, else cpu]"),
]
_PRECISION = [
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"], case_sensitive=False), default="auto",
                 envvar="SIGHTLINE_PRECISION",
                 help="Number format of the model: bf16 is ~2x faster on CPUs with native bf16 and within cosine "
                      "0.9999 of fp32. [env: SIGHTLINE_PRECISION; default: auto = bf16 where the hardware has it, "
                      "else fp32]"),
]
_PIXELS = [
    click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, envvar="SIGHTLINE_MAX_PIXELS",
                 help="Decompression-bomb limit: images with more pixels are refused. "
                      "[env: SIGHTLINE_MAX_PIXELS; default: 178,956,970]"),
]
_ONNX = [
    click.option("--onnx/--no-onnx", "onnx", default=True, show_default=True, envvar="SIGHTLINE_ONNX",
                 help="Answer queries with the index's ONNX export of its model (onnxruntime, no torch to load) "
                      "where it has one; --no-onnx always uses torch. [env: SIGHTLINE_ONNX]"),
]
_SETTING_PARAMS = ("index_dir", "db_url", "faiss_index", "model_name", "pretrained", "device", "precision",
                   "max_pixels", "onnx")


def make_settings(index_dir: Optional[Path] = None, db_url: Optional[str] = None, faiss_index: Optional[str] = None,
                  model_name: Optional[str] = None, pretrained: Optional[str] = None, device: Optional[str] = None,
                  precision: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS, onnx: bool = True) -> Settings:
    """The library settings for these option values (missing ones take their defaults)."""
    return Settings(index_dir or default_index_dir(), model=ModelSpec(model_name or None, pretrained or None),
                    device=device or None, precision=(precision or "auto").lower(), faiss_index=faiss_index or None,
                    max_pixels=max_pixels, onnx=onnx, db_url=db_url or None)


def with_settings(index: bool = True, faiss: bool = True, model: bool = True, precision: bool = True,
                  pixels: bool = True, onnx: bool = False):
    """Add the chosen groups of setting options to a command; it receives them as one ``settings``.
    ``onnx``: the commands that answer queries choose between the ONNX export and torch."""
    groups = ((index, _INDEX), (faiss, _FAISS), (model, _MODEL), (precision, _PRECISION), (pixels, _PIXELS),
              (onnx, _ONNX))
    options = [option for wanted, group in groups if wanted for option in group]

    def decorate(func):
        @functools.wraps(func)
        def command(*args, **kwargs):
            values = {name: kwargs.pop(name) for name in _SETTING_PARAMS if name in kwargs}
            return func(*args, settings=make_settings(**values), **kwargs)

        for option in reversed(options):
            command = option(command)
        return command

    return decorate


workers_option = click.option(
    "--workers", type=click.IntRange(0), default=None, envvar="SIGHTLINE_WORKERS",
    help="Decode worker processes (0: decode in the main process). [env: SIGHTLINE_WORKERS; default: CPU count]")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def handle_errors(func):
    """Turn library errors into a message on stderr and the error's exit code, and
    SIGTERM into the same clean stop as Ctrl-C."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        previous = _terminate_like_ctrl_c()
        try:
            return func(*args, **kwargs)
        except SightlineError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except Terminated:
            click.echo("Terminated.", err=True)
            sys.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _terminate_like_ctrl_c():
    """Route SIGTERM to :class:`Terminated` while a command runs; returns the old handler
    (None where signals cannot be set: outside the main thread, e.g. under a test runner)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def raise_terminated(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, raise_terminated)


def configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if verbose == 0:
        # open_clip and huggingface_hub narrate loading (and failed downloads)
        # themselves; our own error message says what matters, once.
        handler.addFilter(lambda record: record.name != "root" and not record.name.startswith("huggingface_hub"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
