"""The application factory.

``create_app(settings)`` only wires things together; the index is opened
and the model loaded when the app starts (its lifespan), once, and kept on
``app.state`` for every request.  Blocking work runs on a thread pool owned
by the app, sized by ``settings.threads``.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from sightline.web.api import build_router
from sightline.web.api_duplicates import build_duplicates_router
from sightline.web.errors import install_handlers
from sightline.web.security import RequestGuard
from sightline.web.service import SearchService
from sightline.web.settings import ServerSettings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"


def open_engine(settings: ServerSettings):
    """The default engine: over the settings' index, with the model they choose
    (the index's own unless they name one), loaded when first needed."""
    from sightline.search.engine import SearchEngine

    return SearchEngine.open(settings.engine_settings)


def create_app(settings: ServerSettings) -> FastAPI:
    settings.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        executor = ThreadPoolExecutor(settings.threads, thread_name_prefix="sightline")
        loop = asyncio.get_running_loop()
        factory = settings.engine_factory or (lambda: open_engine(settings))
        try:
            service = await loop.run_in_executor(executor, SearchService, settings, factory)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        app.state.executor, app.state.service = executor, service
        app.state.engine = service.engine
        if settings.preload_model:
            await loop.run_in_executor(executor, service.preload)
        refresher = asyncio.create_task(_refresh_loop(service, executor, settings.refresh_seconds))
        try:
            yield
        finally:
            refresher.cancel()
            executor.shutdown(wait=True, cancel_futures=True)
            service.close()

    app = FastAPI(
        title="Sightline", version=_version(), lifespan=lifespan, redoc_url=None,
        description="Search an indexed photo collection by text or by example. "
                    "Errors are JSON: `{\"error\": {\"type\", \"message\", \"status\"}}`. When the server "
                    "has a token, send it as `Authorization: Bearer TOKEN` on every `/api` call.",
    )
    app.state.settings = settings
    index_dir = Path(settings.index_dir)
    install_handlers(app, secrets=[str(index_dir), str(index_dir.expanduser().resolve())])
    app.include_router(build_router())
    app.include_router(build_duplicates_router())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index_page():
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.add_middleware(RequestGuard, settings=settings)
    return app


async def _refresh_loop(service: SearchService, executor, every: float) -> None:
    """Pick up what a concurrent `sightline index` run committed."""
    if every <= 0:
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        try:
            await loop.run_in_executor(executor, service.refresh)
        except Exception:
            log.warning("refreshing the index failed; will retry", exc_info=True)


def _version() -> str:
    try:
        return metadata.version("sightline")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0"
