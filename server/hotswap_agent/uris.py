"""Source URIs: parsing, the allow-list, and the addresses a download may never reach.

Everything here is pure (no disk, no network), so a URI is refused before anything is touched.
A URI matches an allow-list prefix when, after both are put in canonical form, it equals the
prefix or continues it at a boundary: the prefix ends with ``/`` (or ``@``), or the URI continues
with ``/`` or ``@``. So ``file:///srv/models`` allows ``file:///srv/models/v2`` but not
``file:///srv/models-evil``.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from hotswap_agent.errors import InvalidSource, SourceNotAllowed

SCHEMES = ("file", "s3", "http", "https", "hf")
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz")

# Link-local ranges hold cloud metadata services (169.254.169.254, fd00:ec2::254); Alibaba uses
# 100.100.100.200. Unspecified addresses reach the local host. None of these is ever a source.
_REFUSED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32", "0.0.0.0/8", "::/128")
)
_REFUSED_HOSTNAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})

_HF_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_HF_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class SourceUri:
    """A parsed, checked source URI.

    ``location`` is scheme-specific: the absolute path (file), the key or key prefix (s3, no
    leading slash), the URL path (http), the revision (hf). ``authority`` is the bucket (s3),
    ``host[:port]`` (http), ``org/name`` (hf), empty (file).
    """

    raw: str
    scheme: str
    authority: str
    location: str
    canonical: str
    host: str = ""
    port: int | None = None

    @property
    def is_tarball(self) -> bool:
        return self.scheme != "hf" and self.location.lower().endswith(TARBALL_SUFFIXES)


def is_refused_address(address: str) -> bool:
    """True for link-local, metadata and unspecified addresses (IPv4-mapped IPv6 included)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _REFUSED_NETWORKS if net.version == ip.version)


def check_host(host: str) -> None:
    """Refuse a metadata host name or a refused address literal; names are checked again at connect."""
    name = host.strip("[]").lower().rstrip(".")
    if name in _REFUSED_HOSTNAMES or is_refused_address(name):
        raise SourceNotAllowed(f"refused address: {host} is link-local or a metadata service")


def _segments_safe(path: str) -> bool:
    for candidate in (path, unquote(path)):
        if "\x00" in candidate or "\\" in candidate:
            return False
        if any(seg in ("..", ".") for seg in candidate.split("/")):
            return False
    return True


def parse_source(uri: str) -> SourceUri:
    """Parse a source URI; raise ``InvalidSource`` (malformed) or ``SourceNotAllowed`` (unsafe)."""
    if not isinstance(uri, str) or not uri or len(uri) > 4096:
        raise InvalidSource("uri must be a non-empty string")
    if any(ord(c) < 0x20 or c == "\x7f" for c in uri):
        raise InvalidSource("uri contains control characters")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidSource(f"malformed uri: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidSource(f"unsupported scheme {parts.scheme!r}: use one of {', '.join(SCHEMES)}")
    if parts.fragment:
        raise InvalidSource("uri must not have a fragment")
    if not _segments_safe(parts.path):
        raise SourceNotAllowed("uri path must not contain '..', '.', backslashes or NUL")
    if scheme != "http" and scheme != "https" and parts.query:
        raise InvalidSource(f"{scheme}:// uris take no query string")
    if parts.username is not None or parts.password is not None:
        raise InvalidSource("credentials in the uri are not accepted: configure them in the environment")

    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidSource("file:// uris name a local path: file:///absolute/path")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise InvalidSource("file:// path must be absolute")
        norm = posixpath.normpath(path)
        norm = "/" + norm.lstrip("/")
        trailing = "/" if path.endswith("/") and norm != "/" else ""
        return SourceUri(uri, scheme, "", norm, f"file://{norm}{trailing}")

    if scheme == "s3":
        bucket = parts.netloc
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,62}", bucket):
            raise InvalidSource(f"not an S3 bucket name: {bucket!r}")
        key = unquote(parts.path).lstrip("/")
        if "//" in key:
            raise InvalidSource("s3 key must not contain empty segments")
        return SourceUri(uri, scheme, bucket, key, f"s3://{bucket}/{key}")

    if scheme in ("http", "https"):
        host = (parts.hostname or "").lower()
        if not host:
            raise InvalidSource("http(s) uri needs a host")
        check_host(host)
        effective_port = port if port is not None else _DEFAULT_PORTS[scheme]
        authority = host if effective_port == _DEFAULT_PORTS[scheme] else f"{host}:{effective_port}"
        if ":" in host:
            authority = (
                f"[{host}]" if effective_port == _DEFAULT_PORTS[scheme] else f"[{host}]:{effective_port}"
            )
        path = unquote(parts.path) or "/"
        return SourceUri(
            uri, scheme, authority, path, f"{scheme}://{authority}{path}", host=host, port=effective_port
        )

    # hf://org/name@revision
    org = parts.netloc
    rest = unquote(parts.path).lstrip("/")
    name, _, revision = rest.partition("@")
    revision = revision or "main"
    if not _HF_REPO_PART.match(org) or not _HF_REPO_PART.match(name):
        raise InvalidSource("hf uri must be hf://org/name@revision")
    if not _HF_REVISION.match(revision) or ".." in revision:
        raise InvalidSource(f"not a revision: {revision!r}")
    return SourceUri(uri, scheme, f"{org}/{name}", revision, f"hf://{org}/{name}@{revision}")


def parse_allow_prefix(prefix: str) -> str:
    """Canonical form of an allow-list prefix (raise ``ValueError`` when it is not a usable prefix)."""
    try:
        parsed = _parse_prefix(prefix)
    except (InvalidSource, SourceNotAllowed) as exc:
        raise ValueError(f"bad allow prefix {prefix!r}: {exc.message}") from None
    return parsed


def _parse_prefix(prefix: str) -> str:
    parts = urlsplit(prefix)
    if parts.query:
        raise InvalidSource("a prefix has no query string")
    if parts.scheme.lower() == "hf" and "@" not in parts.path:
        # hf://org/ (every repo of org) or hf://org/name (every revision of that repo)
        org, name = parts.netloc, parts.path.strip("/")
        if not _HF_REPO_PART.match(org) or (name and not _HF_REPO_PART.match(name)):
            raise InvalidSource("hf prefix must be hf://org/ or hf://org/name")
        return f"hf://{org}/{name}" if name else f"hf://{org}/"
    if parts.scheme.lower() == "s3" and not parts.path:
        prefix = prefix + "/"
    if parts.scheme.lower() in ("http", "https") and not parts.path:
        prefix = prefix + "/"
    return parse_source(prefix).canonical


def is_allowed(source: SourceUri, allow: tuple[str, ...]) -> bool:
    target = source.canonical
    for prefix in allow:
        if target == prefix or target == prefix.rstrip("/"):
            return True
        if target.startswith(prefix):
            if prefix.endswith(("/", "@")) or target[len(prefix)] in "/@":
                return True
    return False


def check_allowed(source: SourceUri, allow: tuple[str, ...]) -> None:
    if not is_allowed(source, allow):
        raise SourceNotAllowed(f"source {source.canonical} is not in the agent's allow-list")


def parse_allowed_source(uri: str, allow: tuple[str, ...]) -> SourceUri:
    """Parse and check against the allow-list: the single gate every staging request goes through."""
    source = parse_source(uri)
    check_allowed(source, allow)
    return source
