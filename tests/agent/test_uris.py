"""Source URIs and the allow-list: everything is refused before any disk or network access."""

from __future__ import annotations

import pytest
from hotswap_agent.errors import InvalidSource, SourceNotAllowed
from hotswap_agent.uris import is_refused_address, parse_allow_prefix, parse_allowed_source, parse_source

ALLOW = tuple(
    parse_allow_prefix(p)
    for p in (
        "file:///srv/models",
        "s3://weights/rerankers/",
        "https://mirror.example.com/models/",
        "http://127.0.0.1:8000/",
        "hf://BAAI/bge-reranker-v2-m3",
        "hf://acme/",
    )
)


@pytest.mark.parametrize(
    "uri",
    [
        "file:///srv/models/v2",
        "file:///srv/models/v2/",
        "file:///srv/models/v2.tar.gz",
        "file://localhost/srv/models/v2",
        "s3://weights/rerankers/v2/",
        "s3://weights/rerankers/v2.tar",
        "https://mirror.example.com/models/v2.tgz?X-Amz-Signature=abc",
        "https://MIRROR.example.com:443/models/v2/",
        "http://127.0.0.1:8000/anything/v2/",
        "hf://BAAI/bge-reranker-v2-m3@2c3ffc6",
        "hf://BAAI/bge-reranker-v2-m3",
        "hf://acme/reranker@main",
    ],
)
def test_allowed(uri: str) -> None:
    assert parse_allowed_source(uri, ALLOW).raw == uri


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("file:///etc/passwd", "allow-list"),
        ("file:///etc", "allow-list"),
        ("file:///srv/models-evil/v2", "allow-list"),
        ("file:///srv/models/../../etc/shadow", "'..'"),
        ("file:///srv/models/%2e%2e/%2e%2e/etc", "'..'"),
        ("file:///srv/models/v2/..", "'..'"),
        ("s3://weights/rerankers/../secrets/", "'..'"),
        ("s3://weights-other/rerankers/v2/", "allow-list"),
        ("https://mirror.example.com/other/v2/", "allow-list"),
        ("http://mirror.example.com/models/v2/", "allow-list"),  # scheme is part of the prefix
        ("http://127.0.0.1:8001/v2/", "allow-list"),  # and so is the port
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/v2.tar", "link-local"),
        ("http://[::ffff:169.254.169.254]/v2.tar", "link-local"),
        ("http://metadata.google.internal/computeMetadata/v1/", "link-local"),
        ("hf://BAAI/bge-reranker-v2-m3-evil@main", "allow-list"),
        ("hf://other/model@main", "allow-list"),
    ],
)
def test_refused(uri: str, reason: str) -> None:
    with pytest.raises(SourceNotAllowed, match=reason):
        parse_allowed_source(uri, ALLOW)


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "ftp://host/v2.tar",
        "/srv/models/v2",
        "file://otherhost/srv/models/v2",
        "file:///srv/models/v2#frag",
        "https://user:pass@mirror.example.com/models/v2/",
        "s3://Bad_Bucket/v2/",
        "hf://just-one-part",
        "file:///srv/models/v2\n",
    ],
)
def test_malformed(uri: str) -> None:
    with pytest.raises(InvalidSource):
        parse_source(uri)


def test_shapes() -> None:
    assert parse_source("s3://weights/rerankers/v2.tar.gz").is_tarball
    assert not parse_source("s3://weights/rerankers/v2/").is_tarball
    hf = parse_source("hf://BAAI/bge-reranker-v2-m3")
    assert (hf.authority, hf.location, hf.is_tarball) == ("BAAI/bge-reranker-v2-m3", "main", False)
    http = parse_source("https://Mirror.example.com:8443/a/v2.tar")
    assert (http.host, http.port, http.canonical) == (
        "mirror.example.com",
        8443,
        "https://mirror.example.com:8443/a/v2.tar",
    )


@pytest.mark.parametrize(
    ("address", "refused"),
    [("169.254.169.254", True), ("fd00:ec2::254", True), ("fe80::1%eth0", True), ("100.100.100.200", True),
     ("::ffff:169.254.1.1", True), ("0.0.0.0", True), ("127.0.0.1", False), ("10.0.0.5", False),
     ("example.com", False)],
)  # fmt: skip
def test_refused_addresses(address: str, refused: bool) -> None:
    assert is_refused_address(address) is refused
