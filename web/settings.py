"""Server settings: one plain object, built by the CLI (or a test) and passed
to :func:`sightline.web.app.create_app`.  What the library needs (index,
model, precision, limits) is the library's own
:class:`~sightline.search.settings.Settings`, held in :attr:`ServerSettings.core`."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from sightline.search.errors import SightlineError
from sightline.search.settings import Settings

MiB = 1024 * 1024
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class InsecureBindError(SightlineError):
    """Binding a non-loopback address without a token."""

    exit_code = 2


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerSettings:
    #: The index, its model and how to run it (the library's settings).
    core: Settings
    host: str = "127.0.0.1"
    port: int = 8000
    #: Required when ``host`` is not a loopback address; checked on every API call.
    token: Optional[str] = None
    max_upload_bytes: int = 20 * MiB
    #: Decompression-bomb guard for uploads (pixels); indexed files use the indexer's limit.
    upload_max_pixels: int = 50_000_000
    max_query_chars: int = 1000
    #: Edge lengths of the two thumbnail sizes (grid, detail view).
    thumb_small: int = 320
    thumb_large: int = 1280
    #: Thumbnail cache; default ``<index>/thumbnails``.
    thumbnail_dir: Optional[Path] = None
    #: Worker threads for model inference, FAISS search and image decoding.
    threads: int = 4
    #: torch intra-op threads per inference.  None: all cores; the engine runs
    #: one forward pass at a time, so concurrent queries queue for the model
    #: instead of oversubscribing the CPU; 0: leave torch's default.
    torch_threads: Optional[int] = None
    #: How often to pick up what a concurrent `sightline index` committed (0: never).
    refresh_seconds: float = 2.0
    #: Load the model at startup so that the first query is warm.
    preload_model: bool = True
    #: Tests inject an engine (e.g. over a fake encoder); default: SearchEngine.open.
    engine_factory: Optional[Callable[[], object]] = field(default=None, repr=False)

    @property
    def index_dir(self) -> Path:
        return self.core.index_dir

    @property
    def engine_settings(self) -> Settings:
        """The library settings the engine opens with: the core ones, with the server's torch threads."""
        return replace(self.core, threads=self.intra_op_threads)

    @property
    def exposed(self) -> bool:
        """True when the server listens beyond this machine."""
        return not is_loopback(self.host)

    @property
    def intra_op_threads(self) -> Optional[int]:
        if self.torch_threads == 0:
            return None
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, os.cpu_count() or 1)

    @property
    def thumbnails(self) -> Path:
        return Path(self.thumbnail_dir) if self.thumbnail_dir else Path(self.index_dir) / "thumbnails"

    def check(self) -> None:
        """Refuse settings that would be unsafe or unusable."""
        if self.exposed and not self.token:
            raise InsecureBindError(
                f"binding {self.host} makes the server reachable from other machines; give an access "
                f"token with --token or SIGHTLINE_TOKEN (or bind 127.0.0.1)."
            )
        if self.token is not None and len(self.token) < 8:
            raise InsecureBindError("the access token must be at least 8 characters long")
        if self.max_upload_bytes < 1 or self.threads < 1:
            raise InsecureBindError("max upload size and thread count must be positive")
