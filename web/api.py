"""The JSON API routes (everything under ``/api``).

Routes stay thin: validate, run the service call on the thread pool, answer.
Files are addressed by integer id only; there is no route that takes a path.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Literal

from fastapi import APIRouter, File, Path, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from PIL import Image

from sightline.search.store_records import display_path
from sightline.web import schemas
from sightline.web.errors import ApiError
from sightline.web.security import COOKIE_NAME, token_matches
from sightline.web.service import SearchService, content_disposition
from sightline.web.thumbnails import iter_file, open_indexed

_ERRORS = {status: {"model": schemas.ErrorResponse} for status in (401, 404, 422, 500, 503)}
_UPLOAD_ERRORS = {status: {"model": schemas.ErrorResponse} for status in (400, 413, 415)}
_JPEG = {200: {"content": {"image/jpeg": {}}, "description": "A JPEG image."},
         304: {"description": "Not modified: `If-None-Match` named the current ETag."}}
_ANY_IMAGE = {200: {"content": {"image/*": {}}, "description": "The original file, as indexed."}}
# Clients may label uploads generically; anything else announced is refused (415).
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}

ImageId = Annotated[int, Path(ge=1, le=2**62, description="An image id from a search result.")]


def _service(request: Request) -> SearchService:
    return request.app.state.service


async def _run(request: Request, func, *args):
    """Run blocking work on the app's thread pool, off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app.state.executor, functools.partial(func, *args))


def _base(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


async def _read_upload(request: Request, upload: UploadFile) -> bytes:
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    if not (content_type.startswith("image/") or content_type in _GENERIC_TYPES):
        raise ApiError(415, f"expected an image upload, got {content_type!r}")
    limit = request.app.state.settings.max_upload_bytes
    data = await upload.read(limit + 1)
    await upload.close()
    if len(data) > limit:
        raise ApiError(413, f"the upload is larger than the limit of {limit / (1024 * 1024):g} MiB")
    return data


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", responses=_ERRORS)

    @router.get("/search/text", response_model=schemas.ImageSearchResponse, tags=["search"],
                summary="Text → image search")
    async def search_text(request: Request, query: Annotated[schemas.TextQuery, Query()]):
        """Images best matching a text query, best first; page with `k` and `offset`."""
        return await _run(request, _service(request).search_text, query, _base(request))

    @router.post("/search/image", response_model=schemas.ImageSearchResponse, tags=["search"],
                 summary="Image → image search (upload)", responses=_UPLOAD_ERRORS)
    async def search_image(request: Request, page: Annotated[schemas.ImagePage, Query()],
                           file: Annotated[UploadFile, File(description="The query image.")]):
        """Images most similar to an uploaded image; with `captions=N`, also the
        N stored captions that best describe it (one upload, one model pass)."""
        data = await _read_upload(request, file)
        return await _run(request, _service(request).search_upload, data, page, _base(request))

    @router.get("/images/{image_id}/similar", response_model=schemas.ImageSearchResponse, tags=["search"],
                summary="Image → image search (\"more like this\")")
    async def similar(request: Request, image_id: ImageId, page: Annotated[schemas.ImagePage, Query()]):
        """Images most similar to an indexed image (itself excluded)."""
        return await _run(request, _service(request).similar, image_id, page, _base(request))

    @router.post("/captions/image", response_model=schemas.CaptionSearchResponse, tags=["search"],
                 summary="Image → text (upload)", responses=_UPLOAD_ERRORS)
    async def captions_upload(request: Request, query: Annotated[schemas.CaptionQuery, Query()],
                              file: Annotated[UploadFile, File(description="The query image.")]):
        """The stored captions that best match an uploaded image (empty, with a
        `note`, when the index holds no captions)."""
        data = await _read_upload(request, file)
        return await _run(request, _service(request).captions_for_upload, data, query.k)

    @router.get("/images/{image_id}/captions", response_model=schemas.CaptionSearchResponse, tags=["search"],
                summary="Image → text (indexed image)")
    async def captions_by_id(request: Request, image_id: ImageId, query: Annotated[schemas.CaptionQuery, Query()]):
        """The stored captions that best match an indexed image."""
        return await _run(request, _service(request).captions_for_id, image_id, query.k)

    @router.get("/images/{image_id}", response_model=schemas.ImageDetail, tags=["images"],
                summary="An image's metadata")
    async def detail(request: Request, image_id: ImageId):
        return await _run(request, _service(request).detail, image_id, _base(request))

    @router.get("/images/{image_id}/thumbnail", tags=["images"], summary="An image's thumbnail",
                response_class=Response, responses=_JPEG)
    async def thumbnail(request: Request, image_id: ImageId,
                        size: Annotated[Literal["small", "large"], Query(description="small: grid; large: detail view")]
                        = "small"):
        """An upright JPEG rendering, generated once and cached on disk."""
        data, etag = await _run(request, _service(request).thumbnail, image_id, size == "large",
                                request.headers.get("if-none-match"))
        headers = {"ETag": etag, "Cache-Control": "private, max-age=86400"}
        if data is None:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    @router.get("/images/{image_id}/file", tags=["images"], summary="An image's original file",
                response_class=StreamingResponse, responses=_ANY_IMAGE)
    async def original(request: Request, image_id: ImageId):
        """The indexed file itself, streamed; only while it is unchanged since indexing."""
        row = await _run(request, _service(request).store.get_file, image_id)
        handle = await _run(request, open_indexed, row)
        headers = {"Content-Length": str(row.size), "Content-Disposition": content_disposition(_name(row)),
                   "Cache-Control": "private, max-age=3600",
                   # Even if a file is not what its name says, it never runs as a page here.
                   "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"}
        return StreamingResponse(iter_file(handle), media_type=_mime(row.format), headers=headers)

    @router.get("/status", response_model=schemas.StatusResponse, tags=["index"], summary="Index status")
    async def status(request: Request):
        return await _run(request, _service(request).status)

    @router.get("/health", response_model=schemas.HealthResponse, tags=["index"], summary="Health check")
    async def health(request: Request):
        return await _run(request, _service(request).health)

    @router.post("/session", status_code=204, tags=["auth"], summary="Log in the browser UI",
                 responses={status: {"model": schemas.ErrorResponse} for status in (400, 401)})
    async def login(request: Request, body: schemas.TokenLogin):
        """Exchange the access token for an HttpOnly cookie (how the UI authenticates
        its image requests). Not needed on a loopback server without a token."""
        settings = request.app.state.settings
        if not settings.token:
            return Response(status_code=204)  # nothing to log in to
        if not token_matches(settings, body.token):
            raise ApiError(401, "wrong access token")
        response = Response(status_code=204)
        response.set_cookie(COOKIE_NAME, body.token, httponly=True, samesite="strict", path="/")
        return response

    @router.delete("/session", status_code=204, tags=["auth"], summary="Log out the browser UI")
    async def logout():
        response = Response(status_code=204)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
        return response

    return router


def _name(row) -> str:
    return display_path(row.path).rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=64)
def _mime(fmt) -> str:
    Image.init()
    mime = Image.MIME.get(fmt or "", "")
    # Only image types are served as such; anything else downloads as bytes.
    return mime if mime.startswith("image/") else "application/octet-stream"
