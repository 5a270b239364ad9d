"""The operator's settings: one frozen, typed object read from ``HOTSWAP_OPERATOR_*`` variables.

Read once at operator startup (never at import). A bad value raises :class:`ConfigError` naming
the variable, so a misconfigured Deployment fails at once with a message that says what to fix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

PREFIX = "HOTSWAP_OPERATOR_"
T = TypeVar("T")


class ConfigError(ValueError):
    """A ``HOTSWAP_OPERATOR_*`` variable holds a value the operator cannot use."""


@dataclasses.dataclass(frozen=True)
class Config:
    agent_port: int = 9090
    """Port of the agent sidecar in every pod."""
    agent_scheme: str = "http"
    """``http`` or ``https`` towards the agents."""
    agent_token_file: Path = Path("/var/run/secrets/hotswap/token")
    """The agent bearer token, mounted from a Secret; re-read when it changes."""
    server_port: int = 8080
    """Data-plane port of the server in every pod (its ``/metrics`` feed the soak analysis)."""
    request_timeout: float = 10.0
    """Bound on one HTTP request to an agent or a server."""
    poll_interval: float = 0.5
    """How often a running operation or a waiting rollout is looked at."""
    resync_interval: float = 30.0
    """How often a settled resource is re-checked for drift (pod events also wake it)."""
    retry_backoff_max: float = 10.0
    """Ceiling of the exponential backoff between retries of a transient failure."""
    failed_pod_retry: float = 30.0
    """How long a pod that failed to converge on a known-good version waits before another try."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            agent_port=_read(env, "AGENT_PORT", _port, cls.agent_port),
            agent_scheme=_read(env, "AGENT_SCHEME", _scheme, cls.agent_scheme),
            agent_token_file=_read(env, "AGENT_TOKEN_FILE", Path, cls.agent_token_file),
            server_port=_read(env, "SERVER_PORT", _port, cls.server_port),
            request_timeout=_read(env, "REQUEST_TIMEOUT_SECONDS", _positive, cls.request_timeout),
            poll_interval=_read(env, "POLL_SECONDS", _positive, cls.poll_interval),
            resync_interval=_read(env, "RESYNC_SECONDS", _positive, cls.resync_interval),
            retry_backoff_max=_read(env, "RETRY_BACKOFF_MAX_SECONDS", _positive, cls.retry_backoff_max),
            failed_pod_retry=_read(env, "FAILED_POD_RETRY_SECONDS", _positive, cls.failed_pod_retry),
        )

    def read_token(self) -> str:
        """The agent token; a missing or empty file names the variable that points at it."""
        try:
            token = self.agent_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{PREFIX}AGENT_TOKEN_FILE: cannot read {self.agent_token_file}: {exc.strerror}"
            ) from None
        if not token:
            raise ConfigError(f"{PREFIX}AGENT_TOKEN_FILE: {self.agent_token_file} is empty")
        return token


def _read(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: Any) -> T:
    raw = env.get(PREFIX + name)
    if raw is None or raw.strip() == "":
        return default  # type: ignore[no-any-return]
    try:
        return parse(raw.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{PREFIX}{name}: {exc} (got {raw!r})") from None


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("must be a port number 1..65535")
    return value


def _positive(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _scheme(raw: str) -> str:
    if raw not in ("http", "https"):
        raise ValueError("must be http or https")
    return raw
