"""The agent's configuration: one frozen, typed object built from flags and environment variables.

Each setting has a flag and a ``HOTSWAP_AGENT_*`` variable; a flag wins over the variable, the
variable over the default. Nothing is read at import time: ``load_settings(argv, environ)`` does
it all, and every error names the flag or variable that is wrong. Token files are read here, once.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

ENV_PREFIX = "HOTSWAP_AGENT_"
MIN_TOKEN_LENGTH = 16

T = TypeVar("T")


class SettingsError(ValueError):
    """A flag or variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    token: str = field(repr=False)
    server_admin_token: str = field(repr=False)
    models_root: Path
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
    s3_endpoint_url: str | None = None
    hf_endpoint: str = "https://huggingface.co"
    hf_token: str | None = field(default=None, repr=False)
    server_timeout_s: float = 900.0
    source_read_timeout_s: float = 60.0
    log_level: str = "INFO"


# name -> (flag, help). Order is the order of --help.
_FLAGS: dict[str, tuple[str, str]] = {
    "host": ("--host", "listen address (default 0.0.0.0)"),
    "port": ("--port", "listen port (default 9090)"),
    "token_file": ("--token-file", "file holding the bearer token callers must send (required)"),
    "models_root": (
        "--models-root",
        "the models volume; versions live in <root>/<version>/ (default /models)",
    ),
    "server_url": ("--server-url", "the server's data plane (default http://127.0.0.1:8080)"),
    "server_admin_url": ("--server-admin-url", "the server's admin plane (default http://127.0.0.1:8081)"),
    "server_admin_token_file": ("--server-admin-token-file", "file holding the admin plane token (required)"),
    "allow": ("--allow", "allowed source URI prefix; repeatable (env: comma-separated)"),
    "boot_file": ("--boot-file", "JSON/YAML {version, source: {uri, sha256?}} activated at start"),
    "keep": ("--keep", "versions kept on disk, never counting out the active or previous one (default 3)"),
    "pod_name": ("--pod-name", "pod identity in status (default $POD_NAME, else the host name)"),
    "boot_backoff_initial": ("--boot-backoff-initial", "first boot retry delay, seconds (default 1)"),
    "boot_backoff_max": ("--boot-backoff-max", "longest boot retry delay, seconds (default 30)"),
    "s3_endpoint_url": (
        "--s3-endpoint-url",
        "S3-compatible endpoint (default $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL, else AWS)",
    ),
    "hf_endpoint": ("--hf-endpoint", "Hugging Face endpoint or mirror (default $HF_ENDPOINT, else the hub)"),
    "server_timeout": (
        "--server-timeout",
        "seconds allowed for one admin call such as preload (default 900)",
    ),
    "source_read_timeout": (
        "--source-read-timeout",
        "seconds a source may stay silent during a download (default 60)",
    ),
    "log_level": ("--log-level", "DEBUG, INFO, WARNING or ERROR (default INFO)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotswap-agent",
        description="Per-pod sidecar: stages model versions and drives the server's admin plane.",
        epilog=f"Every flag also reads {ENV_PREFIX}<NAME> (e.g. {ENV_PREFIX}MODELS_ROOT); a flag wins.",
    )
    for name, (flag, help_text) in _FLAGS.items():
        if name == "allow":
            parser.add_argument(
                flag, dest=name, action="append", default=None, metavar="PREFIX", help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, default=None, help=help_text)
    return parser


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


class _Resolver:
    """Looks a setting up in the flags then the environment, naming the source on error."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self.args = args
        self.environ = environ

    def raw(self, name: str) -> tuple[str | None, str]:
        value = getattr(self.args, name, None)
        if value is not None:
            return str(value), _FLAGS[name][0]
        env = env_name(name)
        if env in self.environ and self.environ[env].strip() != "":
            return self.environ[env].strip(), env
        return None, f"{_FLAGS[name][0]} / {env}"

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        value, source = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{source}: {exc}") from None

    def required(self, name: str, parse: Callable[[str], T]) -> T:
        value, source = self.raw(name)
        if value is None:
            raise SettingsError(f"{source} is required")
        try:
            return parse(value)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{source}: {exc}") from None


def _port(value: str) -> int:
    port = _int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"not a port number: {value!r}")
    return port


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"not an integer: {value!r}") from None


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"not a number: {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"must be a positive number: {value!r}")
    return number


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r}")
    return value.rstrip("/")


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


def _allow_list(resolver: _Resolver) -> tuple[str, ...]:
    from hotswap_agent.uris import parse_allow_prefix

    flags: list[str] | None = resolver.args.allow
    if flags:
        items, source = list(flags), "--allow"
    else:
        env = env_name("allow")
        items = [p for p in resolver.environ.get(env, "").replace(",", " ").split() if p]
        source = env
    prefixes = []
    for item in items:
        try:
            prefixes.append(parse_allow_prefix(item))
        except ValueError as exc:
            raise SettingsError(f"{source}: {exc}") from None
    return tuple(prefixes)


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags and ``HOTSWAP_AGENT_*`` variables into ``Settings``; raise ``SettingsError``."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    args = build_parser().parse_args(list(argv) if argv is not None else [])
    r = _Resolver(args, env)

    keep = r.get("keep", _int, 3)
    if keep < 1:
        raise SettingsError(f"{r.raw('keep')[1]}: must be at least 1, got {keep}")
    backoff_initial = r.get("boot_backoff_initial", _positive_float, 1.0)
    backoff_max = r.get("boot_backoff_max", _positive_float, 30.0)
    if backoff_max < backoff_initial:
        raise SettingsError(f"{r.raw('boot_backoff_max')[1]}: smaller than the initial backoff")
    models_root = r.get("models_root", Path, Path("/models"))
    pod_name = r.get("pod_name", str, env.get("POD_NAME") or env.get("HOSTNAME") or socket.gethostname())
    s3_default = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    hf_default = (env.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    values: dict[str, Any] = {
        "token": r.required("token_file", _secret_file),
        "server_admin_token": r.required("server_admin_token_file", _secret_file),
        "models_root": models_root,
        "host": r.get("host", str, "0.0.0.0"),
        "port": r.get("port", _port, 9090),
        "server_url": r.get("server_url", _http_url, "http://127.0.0.1:8080"),
        "server_admin_url": r.get("server_admin_url", _http_url, "http://127.0.0.1:8081"),
        "allow": _allow_list(r),
        "boot_file": r.get("boot_file", Path, None),
        "keep": keep,
        "pod_name": pod_name,
        "boot_backoff_initial_s": backoff_initial,
        "boot_backoff_max_s": backoff_max,
        "s3_endpoint_url": r.get("s3_endpoint_url", _http_url, s3_default),
        "hf_endpoint": r.get("hf_endpoint", _http_url, hf_default),
        "hf_token": env.get("HF_TOKEN") or None,
        "server_timeout_s": r.get("server_timeout", _positive_float, 900.0),
        "source_read_timeout_s": r.get("source_read_timeout", _positive_float, 60.0),
        "log_level": r.get("log_level", _log_level, "INFO"),
    }
    return Settings(**values)
