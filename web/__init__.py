"""Sightline's query server and browser UI.

``sightline.web.app.create_app(settings)`` builds the FastAPI application;
nothing is loaded at import time.  This package builds on
:mod:`sightline.search` only.
"""
