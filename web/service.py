"""What the routes call: engine queries turned into response models.

Every method here is synchronous and may be slow (model inference, FAISS
search, SQLite, image decoding); the routes run them on the app's thread
pool so the event loop keeps serving other requests.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from typing import Callable, Optional
from urllib.parse import quote

from PIL import Image

from sightline.search.engine import CaptionHit, ImageHit, SearchEngine
from sightline.search.errors import ImageDecodeError, InvalidQueryError
from sightline.search.imageio import decode_image
from sightline.search.store_records import FileRow, Kind, display_path
from sightline.web import schemas
from sightline.web.settings import ServerSettings
from sightline.web.thumbnails import ThumbnailCache

log = logging.getLogger(__name__)

NO_CAPTIONS_NOTE = ("This index holds no captions, so there is no text to match the image against. "
                    "Captions are stored in the index alongside the photos (for example when a captioned "
                    "collection is indexed).")
EMPTY_INDEX_NOTE = "The index is empty: run `sightline index PHOTO_FOLDER` first."
COUNTS_TTL_S = 1.0
_UPLOAD_DRAFT = 512  # large JPEG uploads decode at >= 512 px; the model sees far less


def iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


class SearchService:
    def __init__(self, settings: ServerSettings, open_engine: Callable[[], SearchEngine]):
        self.settings = settings
        self.engine = open_engine()
        self.thumbnails = ThumbnailCache(settings.thumbnails, settings.core.max_pixels)
        self.model_loaded = False
        self.model_error: Optional[str] = None
        self._counts_cache: tuple[float, dict] = (-1e9, {})

    # ------------------------------------------------------------- lifecycle
    def preload(self) -> None:
        """Load the model and run a query once, so the first real query is warm."""
        if self.store.model_info() is None:
            return  # empty index: the model it will use is not known yet
        try:
            encoder = self.engine.encoder
            if hasattr(encoder, "warm_up"):
                encoder.warm_up()  # the ONNX query encoder: both towers, queries of every usual length
            # A whole query through this service, so that the vector index is loaded (and caught
            # up) and the response models are built now, not by the first user.
            self.search_text(schemas.TextQuery(q="warm up the search path", k=1), "")
            self._counts_cache = (-1e9, {})  # counted for the warm-up only: requests count afresh
            self.model_loaded = True
        except Exception as exc:  # keep serving metadata; queries will report it
            self.model_error = f"{type(exc).__name__}: {exc}"
            log.error("could not load the search model: %s", exc)

    def refresh(self) -> None:
        self.engine.store.refresh()

    def close(self) -> None:
        self.engine.close()

    @property
    def store(self):
        return self.engine.store

    def counts(self) -> dict:
        """Image/caption counts, at most a second old: COUNT(*) scans a large
        index's table, and every query reports the index size."""
        stamp, counts = self._counts_cache
        now = time.monotonic()
        # An empty index is re-counted every time (cheap), so first images show at once.
        if now - stamp > COUNTS_TTL_S or not counts.get("images"):
            counts = self.store.counts()
            self._counts_cache = (now, counts)
        return counts

    # --------------------------------------------------------------- queries
    def search_text(self, query: schemas.TextQuery, base: str) -> schemas.ImageSearchResponse:
        started = time.perf_counter()
        text = query.q.strip()
        if not text:
            raise InvalidQueryError("the query text is empty")
        if len(query.q) > self.settings.max_query_chars:
            raise InvalidQueryError(f"the query is {len(query.q)} characters long; "
                                    f"the limit is {self.settings.max_query_chars}")
        images = self.counts()["images"]
        hits = self.engine.search_text(text, query.k, query.offset, query.min_score) if images else []
        self.model_loaded = self.model_loaded or bool(images)
        echo = schemas.QueryEcho(kind="text", text=text)
        return self._page(echo, query, hits, images, started, base)

    def search_upload(self, data: bytes, page: schemas.ImagePage, base: str) -> schemas.ImageSearchResponse:
        started = time.perf_counter()
        image = self.decode_upload(data)
        images = self.counts()["images"]
        captions = note = None
        hits: list[ImageHit] = []
        if images:
            engine = self.engine
            vector = engine.embed_image(image)
            self.model_loaded = True
            hits = engine.search_vector(vector, page.k, page.offset, page.min_score)
            if page.captions:
                captions, note = self._captions_for_vector(vector, page.captions)
        elif page.captions:
            captions, note = [], EMPTY_INDEX_NOTE
        echo = schemas.QueryEcho(kind="image")
        return self._page(echo, page, hits, images, started, base, captions, note)

    def similar(self, image_id: int, page: schemas.ImagePage, base: str) -> schemas.ImageSearchResponse:
        started = time.perf_counter()
        engine = self.engine
        engine.get_image(image_id)  # 404 for an unknown id, before anything else
        hits = engine.similar_to(image_id, page.k, page.offset, page.min_score)
        captions = note = None
        if page.captions:
            captions, note = self._captions(engine.captions_for_image(file_id=image_id, k=page.captions))
        echo = schemas.QueryEcho(kind="similar", image_id=image_id)
        images = self.counts()["images"]
        return self._page(echo, page, hits, images, started, base, captions, note)

    def captions_for_upload(self, data: bytes, k: int) -> schemas.CaptionSearchResponse:
        started = time.perf_counter()
        image = self.decode_upload(data)
        counts = self.counts()
        if counts["captions"] == 0:
            return self._caption_response([], NO_CAPTIONS_NOTE, counts, started)
        vector = self.engine.embed_image(image)
        self.model_loaded = True
        results, note = self._captions_for_vector(vector, k)
        return self._caption_response(results, note, counts, started)

    def captions_for_id(self, image_id: int, k: int) -> schemas.CaptionSearchResponse:
        started = time.perf_counter()
        hits = self.engine.captions_for_image(file_id=image_id, k=k)
        results, note = self._captions(hits)
        return self._caption_response(results, note, self.counts(), started)

    def _captions_for_vector(self, vector, k: int):
        if self.counts()["captions"] == 0:
            return [], NO_CAPTIONS_NOTE
        found = self.store.search(Kind.CAPTIONS, vector, k)
        rows = self.store.get_captions([i for i, _ in found])
        return self._captions([CaptionHit(i, s, rows[i]) for i, s in found if i in rows])

    def _captions(self, hits: list[CaptionHit]):
        results = [schemas.CaptionResult(id=h.id, score=round(h.score, 6), text=h.caption.text,
                                         source=h.caption.source, file_id=h.caption.file_id) for h in hits]
        note = None if results else (NO_CAPTIONS_NOTE if self.counts()["captions"] == 0
                                     else "No stored caption matched.")
        return results, note

    @staticmethod
    def _caption_response(results, note, counts, started) -> schemas.CaptionSearchResponse:
        return schemas.CaptionSearchResponse(results=results, note=note, index_captions=counts["captions"],
                                             took_ms=_ms(started))

    def _page(self, echo, page: schemas.Page, hits: list[ImageHit], images: int, started: float, base: str,
              captions=None, note=None) -> schemas.ImageSearchResponse:
        full = len(hits) == page.k
        return schemas.ImageSearchResponse(
            query=echo, k=page.k, offset=page.offset, next_offset=page.offset + page.k if full else None,
            results=[schemas.ImageResult(score=round(h.score, 6), **summary_fields(h.file, base)) for h in hits],
            captions=captions, captions_note=note, index_images=images, took_ms=_ms(started),
        )

    def decode_upload(self, data: bytes) -> Image.Image:
        if not data:
            raise ImageDecodeError("the uploaded file is empty")
        image, _ = decode_image(data, max_pixels=self.settings.upload_max_pixels, draft_size=_UPLOAD_DRAFT)
        return image

    # --------------------------------------------------------------- images
    def detail(self, image_id: int, base: str) -> schemas.ImageDetail:
        row = self.store.get_file(image_id)
        captions = [schemas.CaptionText(id=c.id, text=c.text, source=c.source)
                    for c in self.store.captions_for_file(image_id)]
        return schemas.ImageDetail(
            **summary_fields(row, base), size=row.size, modified_at=iso(row.mtime_ns / 1e9),
            indexed_at=iso(row.indexed_at), sha256=row.sha256, orientation=row.orientation,
            captions=captions, similar_url=f"{base}/api/images/{row.id}/similar",
        )

    def thumbnail(self, image_id: int, large: bool, if_none_match: Optional[str]) -> tuple[Optional[bytes], str]:
        """(JPEG bytes, ETag); no bytes when the client's copy is current."""
        row = self.store.get_file(image_id)
        size = self.settings.thumb_large if large else self.settings.thumb_small
        etag = f'"{row.sha256[:32]}-{size}"'
        if if_none_match == etag:
            return None, etag
        return self.thumbnails.get(row, size), etag

    def status(self) -> schemas.StatusResponse:
        info = self.engine.status()
        run = info.get("last_run") or None
        last = None
        if run:
            last = schemas.LastRun(started_at=iso(run.get("started_at")), finished_at=iso(run.get("finished_at")),
                                   **{k: run.get(k) for k in ("indexed", "reused", "removed", "failed")})
        return schemas.StatusResponse(
            images=info["images"], captions=info["captions"], failed=info["failed"], model=info["model"],
            dim=info["dim"], last_indexed=(last.finished_at or last.started_at) if last else None,
            last_run=last, disk_bytes=info["disk_bytes"], model_loaded=self.model_loaded,
            token_required=bool(self.settings.token),
        )

    def health(self) -> schemas.HealthResponse:
        images = self.store.counts()["images"]  # proves the database answers
        degraded = self.model_error is not None and not self.model_loaded
        return schemas.HealthResponse(status="degraded" if degraded else "ok", images=images,
                                      model_loaded=self.model_loaded,
                                      detail="the search model could not be loaded" if degraded else None)


def summary_fields(row: FileRow, base: str) -> dict:
    path = display_path(row.path)
    api = f"{base}/api/images/{row.id}"
    return dict(
        id=row.id, path=path, name=os.path.basename(path), width=row.width, height=row.height,
        taken_at=row.taken_at, format=row.format, thumbnail_url=f"{api}/thumbnail",
        preview_url=f"{api}/thumbnail?size=large", file_url=f"{api}/file",
    )


def content_disposition(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
