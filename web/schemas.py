"""Request and response models of the JSON API (they are the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field

from sightline.search.engine import MAX_K, MAX_QUERY_CHARS


class Page(BaseModel):
    """Paging and filtering shared by the image searches (query parameters)."""

    k: int = Field(20, ge=1, le=MAX_K, description="Results per page.")
    offset: int = Field(0, ge=0, le=100_000, description="Results to skip (pagination).")
    min_score: Optional[float] = Field(None, ge=-1.0, le=1.0,
                                       description="Only results scoring at least this (cosine similarity).")


class ImagePage(Page):
    """Paging for image queries, which can also return matching captions."""

    captions: int = Field(0, ge=0, le=100,
                          description="Also return up to this many best-matching stored captions "
                                      "(0: none).")


class TextQuery(Page):
    # The schema says what the server accepts: some character that str.strip()
    # keeps (\s plus the separators \x1c-\x1f that Python also strips), at most
    # MAX_QUERY_CHARS long (otherwise schema-valid queries such as "  " got 422).
    q: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"[^\s\x1c-\x1f]",
                   description="The text to search for (not only spaces).")


class CaptionQuery(BaseModel):
    k: int = Field(10, ge=1, le=100, description="Number of captions.")


class TokenLogin(BaseModel):
    token: str = Field(..., min_length=1, max_length=1000)


class CaptionText(BaseModel):
    id: int
    text: str
    source: Optional[str] = None


class ImageSummary(BaseModel):
    id: int
    path: str = Field(description="Where the file was indexed (as text; undecodable bytes shown as U+FFFD).")
    name: str = Field(description="The file name.")
    width: int
    height: int
    taken_at: Optional[str] = Field(None, description="Capture time from EXIF (ISO 8601), if any.")
    format: Optional[str] = None
    thumbnail_url: str
    preview_url: str = Field(description="A larger, browser-friendly rendering (JPEG, upright).")
    file_url: str = Field(description="The original file.")


class ImageResult(ImageSummary):
    score: float = Field(description="Cosine similarity to the query; higher is closer.")


class ImageDetail(ImageSummary):
    size: int = Field(description="File size in bytes.")
    modified_at: str = Field(description="File modification time (ISO 8601, UTC).")
    indexed_at: str = Field(description="When the file was indexed (ISO 8601, UTC).")
    sha256: str
    orientation: Optional[int] = Field(None, description="EXIF orientation (already applied to thumbnails).")
    captions: list[CaptionText] = Field(description="Captions stored for this image.")
    similar_url: str


class CaptionResult(BaseModel):
    id: int
    score: float
    text: str
    source: Optional[str] = None
    file_id: Optional[int] = Field(None, description="The image the caption belongs to, if any.")


class QueryEcho(BaseModel):
    kind: Literal["text", "image", "similar"]
    text: Optional[str] = None
    image_id: Optional[int] = None


class ImageSearchResponse(BaseModel):
    query: QueryEcho
    k: int
    offset: int
    next_offset: Optional[int] = Field(description="Offset of the next page; null when there are no more results.")
    results: list[ImageResult]
    captions: Optional[list[CaptionResult]] = Field(None, description="Present when captions were asked for.")
    captions_note: Optional[str] = Field(None, description="Why the caption list is empty, when it is.")
    index_images: int = Field(description="Images in the index (0: the index is empty).")
    took_ms: float


class CaptionSearchResponse(BaseModel):
    results: list[CaptionResult]
    note: Optional[str] = Field(None, description="Why the list is empty, when it is.")
    index_captions: int
    took_ms: float


class LastRun(BaseModel):
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    indexed: Optional[int] = None
    reused: Optional[int] = None
    removed: Optional[int] = None
    failed: Optional[int] = None


class StatusResponse(BaseModel):
    images: int
    captions: int
    failed: int = Field(description="Files the indexer could not read.")
    model: Optional[str] = Field(description="Model id the index was built with (null: empty index).")
    dim: Optional[int] = Field(description="Embedding dimension.")
    last_indexed: Optional[str] = Field(description="When the last indexing run ended (ISO 8601, UTC).")
    last_run: Optional[LastRun] = None
    disk_bytes: int
    model_loaded: bool
    token_required: bool


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    images: int
    model_loaded: bool
    detail: Optional[str] = None


class ErrorDetail(BaseModel):
    type: str = Field(description="Machine-readable error kind, e.g. not_found, payload_too_large.")
    message: str = Field(description="What went wrong, for a person.")
    status: int
    details: Optional[list[dict]] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
