"""Sightline's indexer: folder scanning, decode workers, the indexing pipeline,
caption datasets, evaluation, training, the demo and repair.

Builds on :mod:`sightline.search`; knows nothing of the web app (the command
line in :mod:`sightline.cli` is what joins the two).
"""
