"""The one domain error hierarchy. Library code raises these; api/ maps them to HTTP in one place."""

from __future__ import annotations


class StrataError(Exception):
    """Base of every error Strata raises on purpose; `status` is the HTTP status it maps to."""

    status: int = 500
    type: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(StrataError):
    status = 400
    type = "invalid_request_error"


class ConfigError(BadRequest):
    """A model config that is missing a field, has a bad value, or names an unknown model_type."""

    type = "config_error"


class CheckpointError(BadRequest):
    """A checkpoint whose tensors are missing, unexpected or of the wrong shape."""

    type = "checkpoint_error"


class PromptTooLong(BadRequest):
    type = "context_length_exceeded"


class IngestError(BadRequest):
    type = "ingest_error"


class Unauthorized(StrataError):
    status = 401
    type = "authentication_error"


class NotFound(StrataError):
    status = 404
    type = "not_found"


class PayloadTooLarge(StrataError):
    status = 413
    type = "payload_too_large"


class UnsupportedMedia(StrataError):
    status = 415
    type = "unsupported_media"


class Overloaded(StrataError):
    """The bounded request queue is full; `retry_after` seconds is a hint for the client."""

    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimeout(StrataError):
    """A request that waited and ran longer than its time limit (settings.request_timeout_s)."""

    status = 504
    type = "timeout"


class StoreError(StrataError):
    """A KV store that cannot be opened or read; `strata cache verify --repair` is the way out."""

    status = 503
    type = "store_error"
