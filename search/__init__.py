"""Sightline core library: encoder interface, store, query engine and metrics.

Nothing here imports from ``indexer`` or ``web``; both build on this package.
Importing it does no work: models and stores are created only when asked for.
"""

from search.errors import SightlineError

__all__ = ["SightlineError"]
