"""Sightline: an image-text retrieval search engine.

One distribution, one top-level package:

- :mod:`sightline.search` - the core library: encoders, the store, the query engine, metrics;
- :mod:`sightline.indexer` - folder scanning, the indexing pipeline, datasets, training;
- :mod:`sightline.web` - the HTTP server and browser UI;
- :mod:`sightline.cli` - the ``sightline`` command, the only part that knows both the
  indexer and the web app.

Importing any of them does no work: models and stores are created only when asked for.
"""
