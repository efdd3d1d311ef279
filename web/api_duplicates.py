"""The duplicates view: ``GET /api/duplicates`` (groups of exact and near-duplicate
photos, paged) and the page that shows them (``/duplicates``).

The groups come from :class:`~sightline.search.duplicates.DuplicateFinder`, one
per app: it keeps the near pairs found at the lowest threshold asked so far,
so moving the UI's threshold control up is answered without a new search.
Like the rest of the API, files are addressed by id; ``folder`` only filters
the index's own paths and never touches the file system.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path as FilePath
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from sightline.search.duplicates import DEFAULT_THRESHOLD, MIN_THRESHOLD, DuplicateFinder
from sightline.search.store_records import display_path
from sightline.web.api import _ERRORS, _base, _run, _service
from sightline.web.schemas import ImageSummary
from sightline.web.service import summary_fields

STATIC_DIR = FilePath(__file__).resolve().parent / "static"
#: Files listed per group (a very low threshold can chain thousands together).
MAX_FILES_PER_GROUP = 60
_finder_lock = threading.Lock()


class DuplicatesQuery(BaseModel):
    # Unknown query parameters are ignored, as on every other route.
    threshold: float = Field(DEFAULT_THRESHOLD, ge=MIN_THRESHOLD, le=1.0, allow_inf_nan=False,
                             description="Cosine similarity from which two photos are near duplicates.")
    exact_only: bool = Field(False, description="Only identical files (the same content under several paths).")
    folder: Optional[str] = Field(None, min_length=1, max_length=4096,
                                  description="Only files indexed under this folder (an absolute path).")
    offset: int = Field(0, ge=0, le=100_000, description="Groups to skip (pagination).")
    limit: int = Field(30, ge=1, le=200, description="Groups per page.")


class DuplicateFileOut(ImageSummary):
    size: int = Field(description="File size in bytes.")
    folder: str = Field(description="The folder the file is in.")
    similarity: float = Field(description="Cosine similarity to the group's first (best) file.")


class DuplicateGroupOut(BaseModel):
    kind: Literal["exact", "near"]
    score: float = Field(description="The similarity at which the group would split (1 for exact copies).")
    file_count: int = Field(description="Files in the group (only the first 60 are listed).")
    reclaimable_bytes: int = Field(description="What keeping only the first file would free.")
    files: list[DuplicateFileOut] = Field(description="Best quality first: most pixels, largest, earliest taken.")


class DuplicatesResponse(BaseModel):
    threshold: float
    exact_only: bool
    total_groups: int
    total_files: int
    reclaimable_bytes: int
    offset: int
    next_offset: Optional[int] = Field(description="Offset of the next page; null when there are no more groups.")
    groups: list[DuplicateGroupOut]
    index_images: int
    took_ms: float


def _finder(request: Request) -> DuplicateFinder:
    state = request.app.state
    with _finder_lock:
        if getattr(state, "duplicate_finder", None) is None:
            state.duplicate_finder = DuplicateFinder(_service(request).store)
        return state.duplicate_finder


def _answer(request: Request, query: DuplicatesQuery, base: str) -> DuplicatesResponse:
    started = time.perf_counter()
    service = _service(request)
    images = service.counts()["images"]
    folder = os.path.normpath(query.folder) if query.folder else None
    groups = _finder(request).groups(query.threshold, query.exact_only, folder) if images else []
    page = groups[query.offset:query.offset + query.limit]
    listed = [f for g in page for f in g.files[:MAX_FILES_PER_GROUP]]
    rows = service.store.get_files([f.id for f in listed])
    out = []
    for group in page:
        files = [DuplicateFileOut(**summary_fields(rows[f.id], base), size=rows[f.id].size,
                                  folder=display_path(os.path.dirname(rows[f.id].path)),
                                  similarity=round(f.similarity, 6))
                 for f in group.files[:MAX_FILES_PER_GROUP] if f.id in rows]  # removed meanwhile: skipped
        out.append(DuplicateGroupOut(kind=group.kind, score=round(group.score, 6), file_count=len(group.files),
                                     reclaimable_bytes=group.reclaimable_bytes, files=files))
    end = query.offset + len(page)
    return DuplicatesResponse(
        threshold=query.threshold, exact_only=query.exact_only, total_groups=len(groups),
        total_files=sum(len(g.files) for g in groups), reclaimable_bytes=sum(g.reclaimable_bytes for g in groups),
        offset=query.offset, next_offset=end if end < len(groups) else None, groups=out, index_images=images,
        took_ms=round((time.perf_counter() - started) * 1000, 2))


def build_duplicates_router() -> APIRouter:
    router = APIRouter()

    @router.get("/api/duplicates", response_model=DuplicatesResponse, tags=["duplicates"], responses=_ERRORS,
                summary="Groups of duplicate photos")
    async def duplicates(request: Request, query: Annotated[DuplicatesQuery, Query()]):
        """Exact copies and near copies (resized, re-encoded, lightly cropped or edited), grouped,
        best groups first; each group's files best quality first. Nothing is changed."""
        return await _run(request, _answer, request, query, _base(request))

    @router.get("/duplicates", include_in_schema=False)
    async def duplicates_page():
        return FileResponse(STATIC_DIR / "duplicates.html", headers={"Cache-Control": "no-cache"})

    return router
