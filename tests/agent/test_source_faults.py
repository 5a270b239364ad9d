"""What a source's error says of the version: worth a retry, gone, or refused (``sourceFault``).

The staging tests show each scheme's real answers end to end (a 404, an empty S3 prefix, a missing
hub repository, a 503); these pin the mapping of the answers those fakes cannot give.
"""

from __future__ import annotations

import pytest
from hotswap_agent.errors import SourceUnavailable, http_fault
from hotswap_agent.sources import hf_fault, s3_fault


@pytest.mark.parametrize(
    ("status", "fault"),
    [(404, "gone"), (410, "gone"), (401, "refused"), (403, "refused"), (429, "transient"), (500, "transient"),
     (502, "transient"), (503, "transient"), (400, "transient")],
)  # fmt: skip
def test_http_status(status: int, fault: str) -> None:
    assert http_fault(status) == fault


class _ClientError(Exception):
    """botocore's ClientError shape: what s3fs lets through untranslated."""

    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": 400}}


def _translated(cls: type[OSError], code: str) -> OSError:
    """What s3fs.errors.translate_boto_error makes of a ClientError: a message only, the cause set."""
    exc = cls(f"An error occurred ({code})")
    exc.__cause__ = _ClientError(code)
    return exc


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        (FileNotFoundError("nothing-here.tar"), "gone"),  # s3fs: NoSuchKey, NoSuchBucket
        (PermissionError("Access Denied"), "refused"),  # s3fs: AccessDenied
        (_ClientError("NoSuchBucket"), "gone"),
        (_ClientError("AccessDenied"), "refused"),
        (_ClientError("SlowDown"), "transient"),
        (_ClientError("InternalError"), "transient"),
        (ConnectionResetError("reset by peer"), "transient"),
        # the staging folder, not the bucket (an errno: the OS's): nothing said of the source
        (FileNotFoundError(2, "No such file or directory", "/models/.hotswap/tmp-v1/a"), "transient"),
        (PermissionError(13, "Permission denied", "models/.hotswap/tmp-v1"), "transient"),
        # s3fs's PermissionError for a token that expired or a skewed clock: they pass
        (_translated(PermissionError, "ExpiredToken"), "transient"),
        (_translated(PermissionError, "RequestTimeTooSkewed"), "transient"),
        (_translated(PermissionError, "AccessDenied"), "refused"),
        (_translated(FileNotFoundError, "NoSuchKey"), "gone"),
        (TimeoutError(), "transient"),
    ],
)
def test_s3_errors(exc: BaseException, fault: str) -> None:
    assert s3_fault(exc) == fault


def test_hub_errors() -> None:
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def answered(cls: type[HfHubHTTPError], status: int) -> HfHubHTTPError:
        request = httpx2.Request("GET", "http://hub/api/models/acme/r")
        return cls(f"{status}", response=httpx2.Response(status, request=request))

    assert hf_fault(answered(RepositoryNotFoundError, 404)) == "gone"
    assert hf_fault(answered(RevisionNotFoundError, 404)) == "gone"
    assert hf_fault(EntryNotFoundError("no such file")) == "gone"
    # gated is a RepositoryNotFoundError to huggingface_hub, but access is the question
    assert hf_fault(answered(GatedRepoError, 403)) == "refused"
    assert hf_fault(answered(HfHubHTTPError, 401)) == "refused"
    assert hf_fault(answered(HfHubHTTPError, 429)) == "transient"
    assert hf_fault(answered(HfHubHTTPError, 503)) == "transient"
    assert hf_fault(ConnectionError("Name or service not known")) == "transient"
    # snapshot_download could not ask the hub: the cause says why, or nothing does (no connection)
    throttled = LocalEntryNotFoundError("cannot reach the hub")
    throttled.__cause__ = answered(HfHubHTTPError, 429)
    assert hf_fault(throttled) == "transient"
    assert hf_fault(LocalEntryNotFoundError("offline")) == "transient"
    missing = LocalEntryNotFoundError("cannot find the revision")
    missing.__cause__ = answered(RevisionNotFoundError, 404)
    assert hf_fault(missing) == "gone"


def test_the_fault_reaches_the_error_body_and_defaults_to_transient() -> None:
    assert SourceUnavailable("x").fault == "transient"
    exc = SourceUnavailable("gone for good", fault="gone")
    assert exc.extra == {"source_fault": "gone"} and exc.error_type == "source_unavailable"
