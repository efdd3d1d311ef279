"""The library's settings: one plain object, built at the edge.

The command line (from its options and their environment variables) and the
server build a :class:`Settings` and hand it down; nothing in the library
reads the environment.  A library user builds one directly::

    Settings(Path("~/photos-index").expanduser(), model=ModelSpec("ViT-B-32", "ViT-B-32.pt"))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from sightline.search.imageio import DEFAULT_MAX_PIXELS
from sightline.search.models import ModelSpec


@dataclass(frozen=True)
class Settings:
    """Which index, which model, and how to run it."""

    #: The index folder (database, FAISS files, thumbnails); with :attr:`db_url`, the local
    #: folder for thumbnails and model exports.
    index_dir: Path
    #: The model asked for; empty: the index's recorded model, else the default (see ``resolve_spec``).
    model: ModelSpec = field(default_factory=ModelSpec)
    #: torch device; None: cuda where available, else cpu.
    device: Optional[str] = None
    #: 'auto' (bf16 where the hardware does it natively), 'fp32' or 'bf16'.
    precision: str = "auto"
    #: Threads per inference (torch intra-op threads, set when the model loads; onnxruntime's too);
    #: None leaves their default.
    threads: Optional[int] = None
    #: A FAISS index-factory string instead of the automatic choice (e.g. 'HNSW32').
    faiss_index: Optional[str] = None
    #: Decompression-bomb limit, in pixels, for every decoded image.
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: A database server holding the index instead of the folder's SQLite file: a SQLAlchemy
    #: URL such as ``postgresql+psycopg://user@host/photos`` (PostgreSQL with pgvector).
    db_url: Optional[str] = None
    #: Search with the index's ONNX export (onnxruntime, no torch) where it has one.
    onnx: bool = True
    #: The process answers one query and exits (``sightline search``): the encoder is
    #: set up for the first query's latency rather than for many queries.
    single_query: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "index_dir", Path(self.index_dir).expanduser())

    def open_store(self, create: bool = False):
        """The store at :attr:`index_dir` (created when ``create``)."""
        from sightline.search.store import Store

        if self.db_url:
            return Store.open_url(self.db_url, self.index_dir, create=create)
        return Store.open(self.index_dir, create=create, faiss_index=self.faiss_index)

    def spec_for(self, store):
        """The model for ``store`` now: the one asked for, else the one it records, else the default."""
        from sightline.search.models import resolve_spec

        return resolve_spec(self.model, store.model_info())

    def encoder_factory(self, store):
        """A zero-argument function that loads the model for ``store`` when called.

        The choice is made at the call, not now: a server started on an empty
        index uses the model the first indexing run records later.
        """
        from sightline.search.models import load_encoder

        return lambda: load_encoder(self.spec_for(store), self.device, self.precision, threads=self.threads)

    def query_encoder_factory(self, store):
        """Like :meth:`encoder_factory`, for searching: the index's ONNX export where it has
        one (no torch), else the torch encoder (see ``search.query_encoder``)."""
        from sightline.search.query_encoder import open_query_encoder

        return lambda: open_query_encoder(self, store)
