"""``python -m sightline``: the same as the ``sightline`` command."""

from sightline.cli import run

if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    run()
