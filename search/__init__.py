"""Sightline's core library: encoders, the store, the query engine and metrics.

Nothing here imports from :mod:`sightline.indexer`, :mod:`sightline.web` or
:mod:`sightline.cli`; they build on this package.  Importing it does no
work: models and stores are created only when asked for.
"""

from sightline.search.errors import SightlineError

__all__ = ["SightlineError"]
