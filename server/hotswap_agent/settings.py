"""The agent's configuration: one frozen, typed object built from flags and environment variables.

Each setting has a flag and a ``HOTSWAP_AGENT_*`` variable; a flag wins over the variable, the
variable over the default (the ``Settings`` field's, written once; ``--help`` shows it). Nothing is
read at import time: ``load_settings(argv, environ)`` does it all, and every error names the flag or
variable that is wrong. Token files are read here, once. The pattern is shared with the server and
the operator: :mod:`hotswap_contract.settings`.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hotswap_contract.logs import LOG_FORMATS
from hotswap_contract.settings import (
    Option,
    SettingsError,
    add_options,
    at_least,
    choice,
    port,
    positive,
    resolve,
)

__all__ = ["OPTIONS", "Settings", "SettingsError", "build_parser", "load_settings"]

ENV_PREFIX = "HOTSWAP_AGENT_"
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Settings:
    token: str = field(repr=False)
    server_admin_token: str = field(repr=False)
    models_root: Path = Path("/models")
    host: str = "0.0.0.0"
    port: int = 9090
    server_url: str = "http://127.0.0.1:8080"
    server_admin_url: str = "http://127.0.0.1:8081"
    allow: tuple[str, ...] = ()
    boot_file: Path | None = None
    keep: int = 3
    pod_name: str = "localhost"
    boot_backoff_initial_s: float = 1.0
    boot_backoff_max_s: float = 30.0
    server_watch_interval_s: float = 5.0
    s3_endpoint_url: str | None = None
    hf_endpoint: str = "https://huggingface.co"
    hf_token: str | None = field(default=None, repr=False)
    server_timeout_s: float = 900.0
    source_read_timeout_s: float = 60.0
    log_level: str = "INFO"
    log_format: str = "text"
    cache_dir: Path | None = None
    cache_max_bytes: int = 0
    cache_lock_timeout_s: float = 600.0


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r}")
    return value.rstrip("/")


# The watch asks the server's admin plane for its state at every interval: below this it would be
# a busy loop against the server it watches.
MIN_WATCH_INTERVAL_S = 0.05


def _watch_interval(value: str) -> float:
    seconds = positive(value)
    if seconds < MIN_WATCH_INTERVAL_S:
        raise ValueError(f"must be at least {MIN_WATCH_INTERVAL_S} seconds, got {value!r}")
    return seconds


def _secret_file(value: str) -> str:
    path = Path(value)
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {value}: {exc.strerror}") from None
    if len(secret) < MIN_TOKEN_LENGTH:
        raise ValueError(f"{value}: a token must be at least {MIN_TOKEN_LENGTH} characters")
    return secret


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"not a log level: {value!r}")
    return level


_SIZE_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
}  # fmt: skip


def _byte_size(value: str) -> int:
    """Bytes, plain or with a Kubernetes quantity suffix (``50Gi``, ``20G``); 0 means no limit."""
    text = value.strip()
    digits = text.rstrip("kMGTi")
    unit = text[len(digits) :]
    if unit not in _SIZE_UNITS or not digits.isdigit():
        raise ValueError(f"not a byte size: {value!r} (e.g. 53687091200, 50Gi, 50G)")
    return int(digits) * _SIZE_UNITS[unit]


def _allow_prefix(value: str) -> str:
    from hotswap_agent.uris import parse_allow_prefix  # uris imports this package's errors

    return parse_allow_prefix(value)


def _option(flag: str, text: str, parse: Callable[[str], Any] = str, *, to: str = "", **kw: Any) -> Option:
    """``--server-url`` reads ``HOTSWAP_AGENT_SERVER_URL`` and fills ``server_url`` (or ``to``)."""
    name = flag.removeprefix("--").replace("-", "_")
    return Option(to or name, flag, ENV_PREFIX + name.upper(), text, parse, **kw)


# Order is the order of --help; defaults are the Settings fields above.
OPTIONS: tuple[Option, ...] = (
    _option("--host", "listen address"),
    _option("--port", "listen port", port()),
    _option(
        "--token-file",
        "file holding the bearer token callers must send",
        _secret_file,
        to="token",
        required=True,
    ),
    _option("--models-root", "the models volume; versions live in <root>/<version>/", Path),
    _option("--server-url", "the server's data plane", _http_url),
    _option("--server-admin-url", "the server's admin plane", _http_url),
    _option(
        "--server-admin-token-file",
        "file holding the admin plane token",
        _secret_file,
        to="server_admin_token",
        required=True,
    ),
    _option(
        "--allow", "allowed source URI prefix; repeatable (env: comma-separated)", _allow_prefix, many=True
    ),
    _option("--boot-file", "JSON/YAML {version, source: {uri, sha256?}} activated at start", Path),
    _option("--keep", "versions kept on disk, never counting out the active or previous one", at_least(1)),
    _option(
        "--pod-name", "pod identity in status", default_help="$POD_NAME, else $HOSTNAME, else the host name"
    ),
    _option(
        "--boot-backoff-initial", "first boot retry delay, seconds", positive, to="boot_backoff_initial_s"
    ),
    _option("--boot-backoff-max", "longest boot retry delay, seconds", positive, to="boot_backoff_max_s"),
    _option(
        "--server-watch-interval",
        "seconds between checks that the booted server still serves (a restarted, empty one is booted again)",
        _watch_interval,
        to="server_watch_interval_s",
    ),
    _option(
        "--s3-endpoint-url",
        "S3-compatible endpoint",
        _http_url,
        default_help="$AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL, else AWS",
    ),
    _option(
        "--hf-endpoint",
        "Hugging Face endpoint or mirror",
        _http_url,
        default_help="$HF_ENDPOINT, else the hub",
    ),
    _option(
        "--server-timeout",
        "seconds allowed for one admin call such as preload",
        positive,
        to="server_timeout_s",
    ),
    _option(
        "--source-read-timeout",
        "seconds a source may stay silent during a download",
        positive,
        to="source_read_timeout_s",
    ),
    _option(
        "--cache-dir",
        "model cache shared by pods, keyed by digest (<dir>/sha256-<hex>/); used for pinned sha256 only",
        Path,
        default_help="no cache",
    ),
    _option(
        "--cache-max-bytes",
        "cache size kept: least-recently-used entries not in use are evicted beyond it (50Gi); 0: no limit",
        _byte_size,
    ),
    _option(
        "--cache-lock-timeout",
        "seconds to wait for another agent downloading the same version, then download without the cache",
        positive,
        to="cache_lock_timeout_s",
    ),
    _option("--log-level", "DEBUG, INFO, WARNING or ERROR", _log_level),
    _option(
        "--log-format", "text | json (one object a line, with the access log's fields)", choice(LOG_FORMATS)
    ),
)
_NAMES = {o.field: o.names for o in OPTIONS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotswap-agent",
        description="Per-pod sidecar: stages model versions and drives the server's admin plane.",
        epilog=f"Each flag also reads the {ENV_PREFIX}* variable shown with it; a flag wins over it.",
    )
    add_options(parser, OPTIONS, Settings)
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags and ``HOTSWAP_AGENT_*`` variables into ``Settings``; raise ``SettingsError``."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    args = build_parser().parse_args(list(argv) if argv is not None else [])
    values = resolve(OPTIONS, args, env)
    # Defaults that come from the pod's other variables (the documented fallbacks).
    values.setdefault("pod_name", env.get("POD_NAME") or env.get("HOSTNAME") or socket.gethostname())
    values.setdefault(
        "s3_endpoint_url", env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    )
    if env.get("HF_ENDPOINT"):
        values.setdefault("hf_endpoint", env["HF_ENDPOINT"].rstrip("/"))
    values["hf_token"] = env.get("HF_TOKEN") or None
    settings = Settings(**values)
    if settings.boot_backoff_max_s < settings.boot_backoff_initial_s:
        raise SettingsError(f"{_NAMES['boot_backoff_max_s']}: smaller than the initial backoff")
    return settings
