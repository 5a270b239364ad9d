"""Domain exceptions, each carrying its HTTP status and a stable ``error_type``.

Handlers and operations raise these; the middleware in ``app.py`` turns them into
``{"error": message, "error_type": type}`` with the status set here, in one place.
Anything else becomes a generic 500 whose details go to the log, never to the client.
"""

from __future__ import annotations

from typing import Any, Literal


class AgentError(Exception):
    """Base: a failure with a message that is safe to show a client."""

    status = 500
    error_type = "internal"

    def __init__(self, message: str, *, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        # ``extra``: more fields for the JSON error body; ``result``: kept as the operation's result.
        self.extra: dict[str, Any] = {}
        self.result = result


class Cancelled(AgentError):
    """The agent is shutting down (or the operation was cancelled): try again."""

    error_type = "cancelled"


class BadRequest(AgentError):
    status = 400
    error_type = "bad_request"


class InvalidVersion(AgentError):
    status = 422
    error_type = "invalid_version"


class InvalidSource(AgentError):
    """The URI cannot be parsed or names an unsupported scheme."""

    status = 422
    error_type = "invalid_source"


class Unauthorized(AgentError):
    status = 401
    error_type = "unauthorized"


class SourceNotAllowed(AgentError):
    """Outside the allow-list, a link-local/metadata address, a redirect to another host, `..`."""

    status = 403
    error_type = "source_not_allowed"


class NotOnDisk(AgentError):
    status = 404
    error_type = "not_on_disk"


class OperationInProgress(AgentError):
    status = 409
    error_type = "operation_in_progress"


class VersionConflict(AgentError):
    """The version id is already on disk with another digest: version ids name one content."""

    status = 409
    error_type = "version_conflict"


SourceFault = Literal["transient", "gone", "refused"]


class SourceUnavailable(AgentError):
    """The source cannot be reached or answered an error.

    ``fault`` says whether trying again can help, so that the operator need not read it off the
    message: ``transient`` (throttled, a 5xx, a timeout, a reset connection: worth a retry),
    ``gone`` (the source answered that it does not hold the version: a 404 or 410, no such key or
    repository, an empty prefix, a missing path) or ``refused`` (a 401 or 403: the credentials).
    """

    status = 502
    error_type = "source_unavailable"

    def __init__(self, message: str, *, fault: SourceFault = "transient") -> None:
        super().__init__(message)
        self.fault: SourceFault = fault
        self.extra["source_fault"] = fault


def http_fault(status: int) -> SourceFault:
    """What an HTTP status from a source says of the version (for :class:`SourceUnavailable`)."""
    if status in (404, 410):
        return "gone"
    if status in (401, 403):
        return "refused"
    return "transient"


class SourceInvalid(AgentError):
    """The source answered, but what it holds is not a usable version (bad listing, empty, ...)."""

    status = 422
    error_type = "source_invalid"


class UnsafeArchive(AgentError):
    """A tarball with an absolute path, `..`, a link or a device: refused whole."""

    status = 422
    error_type = "unsafe_archive"


class DigestMismatch(AgentError):
    status = 422
    error_type = "digest_mismatch"


class DiskFull(AgentError):
    status = 507
    error_type = "disk_full"


class ServerUnavailable(AgentError):
    """The model server's admin or data plane cannot be reached."""

    status = 502
    error_type = "server_unavailable"


class ServerRejected(AgentError):
    """The model server answered with an error; its ``error_type`` is kept."""

    status = 502

    def __init__(self, message: str, *, http_status: int, server_error_type: str | None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.server_error_type = server_error_type or "server_error"
        self.error_type = self.server_error_type


class NotStaged(AgentError):
    """Activate was asked for a version the server has not preloaded (never an implicit load)."""

    status = 409
    error_type = "not_staged"


class VerifyFailed(AgentError):
    """The pod does not serve what it should (nothing active, another version answers): a pod fault."""

    status = 422
    error_type = "verify_failed"


class CanaryFailed(VerifyFailed):
    """The version scored the canaries and failed them (not finite, wrong order, could not score):
    the version's fault, never the pod's."""

    error_type = "canary_failed"


class QualityFailed(AgentError):
    """The staged version ranks the labelled set below the floor, or drops too far below the active one."""

    status = 422
    error_type = "quality_failed"


class BootFileError(AgentError):
    status = 422
    error_type = "boot_file_invalid"
