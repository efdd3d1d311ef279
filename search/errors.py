"""Typed errors raised by the library.

Library code raises these; only the CLI and the server turn them into
messages, exit codes and HTTP statuses.  Each carries a message written for
the person who has to act on it.
"""

from __future__ import annotations


class SightlineError(Exception):
    """Base class of every error Sightline raises on purpose."""

    #: Suggested process exit code for command-line front ends.
    exit_code = 1
    #: Suggested HTTP status for the server.
    http_status = 500


class ModelNotAvailableError(SightlineError):
    """Model weights or configuration cannot be found or loaded."""

    exit_code = 3
    http_status = 503


class ModelMismatchError(SightlineError):
    """Vectors from one model would be mixed with vectors from another."""

    exit_code = 4
    http_status = 409


class IndexNotFoundError(SightlineError):
    """No index exists at the given location."""

    exit_code = 5
    http_status = 503


class IndexLockedError(SightlineError):
    """Another process is writing to the index."""

    exit_code = 6
    http_status = 409


class StoreCorruptError(SightlineError):
    """The metadata database is damaged or not a Sightline database."""

    exit_code = 7
    http_status = 500


class ImageDecodeError(SightlineError):
    """An image could not be decoded (corrupt, truncated, unsupported, too large)."""

    exit_code = 8
    http_status = 400


class ImageTooLargeError(ImageDecodeError):
    """An image's pixel count exceeds the decompression-bomb limit."""

    http_status = 413


class NotFoundError(SightlineError):
    """A requested item (image id, caption id) does not exist."""

    exit_code = 9
    http_status = 404


class InvalidQueryError(SightlineError):
    """A query is malformed (empty, too long, bad parameters)."""

    exit_code = 2
    http_status = 422


class DatasetError(SightlineError):
    """A caption dataset is missing, incomplete or malformed (file, image folder, split)."""

    exit_code = 10
    http_status = 400


class ConfigurationError(SightlineError):
    """A setting (an option or its environment variable) has a value that cannot be used."""

    exit_code = 2
    http_status = 500


class DatabaseUnavailableError(SightlineError):
    """A database server cannot be used: unreachable, refusing the login, or lacking pgvector."""

    exit_code = 24
    http_status = 503


class RootMissingError(SightlineError):
    """A remembered root is missing (an unmounted disk, a renamed share): its photos were kept, not swept."""

    exit_code = 20
    http_status = 409


class RootEmptyError(SightlineError):
    """A remembered root holds no photos any more (an empty mount point?): its photos were kept, not swept."""

    exit_code = 21
    http_status = 409


class RootDeviceChangedError(SightlineError):
    """A remembered root is on another device than when it was indexed: its missing photos were kept."""

    exit_code = 22
    http_status = 409


class WatchError(SightlineError):
    """Watch mode cannot watch a root (e.g. the inotify watch limit is reached)."""

    exit_code = 23
    http_status = 500
