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

from web.api import build_router
from web.errors import install_handlers
from web.security import RequestGuard
from web.service import SearchService, limit_torch_threads
from web.settings import Settings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"


def open_engine(settings: Settings):
    """The default engine: the index's own model unless settings name one.

    The model is chosen when it is first needed, not when the index is
    opened: a server started on an empty index then uses the model the
    indexer records later, instead of a default picked too early.
    """
    from search.engine import SearchEngine
    from search.models import ModelSpec, load_encoder
    from search.store import Store

    store = Store.open(settings.index_dir)
    explicit = settings.model_name or settings.pretrained

    def load():
        info = store.model_info()
        if explicit or info is None:
            spec = ModelSpec.from_env(settings.model_name, settings.pretrained)
        else:
            spec = ModelSpec(info.name or None, info.pretrained or None)
        limit_torch_threads(settings.intra_op_threads)
        return load_encoder(spec, settings.device)

    return SearchEngine(store, load)


def create_app(settings: Settings) -> FastAPI:
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
