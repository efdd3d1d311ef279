"""Sightline indexer: folder scanning, the indexing pipeline, datasets,
training, benchmarks and the ``sightline`` command line.  Builds on ``search``."""
