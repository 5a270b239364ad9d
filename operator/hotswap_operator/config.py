"""The operator's settings: one frozen, typed object read from ``HOTSWAP_OPERATOR_*`` variables.

Read once at operator startup (never at import). A bad value raises :class:`ConfigError` naming
the variable, so a misconfigured Deployment fails at once with a message that says what to fix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from hotswap_contract.settings import Option, SettingsError, at_least, port, positive, resolve
from hotswap_contract.settings import variables_help as variables_table

PREFIX = "HOTSWAP_OPERATOR_"


class ConfigError(SettingsError):
    """A ``HOTSWAP_OPERATOR_*`` variable holds a value the operator cannot use."""


@dataclasses.dataclass(frozen=True)
class Config:
    agent_port: int = 9090
    agent_scheme: str = "http"
    agent_token_file: Path = Path("/var/run/secrets/hotswap/token")
    server_port: int = 8080
    request_timeout: float = 10.0
    poll_interval: float = 0.5
    resync_interval: float = 30.0
    retry_backoff_max: float = 10.0
    failed_pod_retry: float = 30.0
    peering_lifetime: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        try:
            return cls(**resolve(OPTIONS, None, env))
        except SettingsError as exc:
            raise ConfigError(str(exc)) from None

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


def _scheme(raw: str) -> str:
    if raw not in ("http", "https"):
        raise ValueError(f"must be http or https, got {raw!r}")
    return raw


# Each default is the Config field's (above); each help text is here, shown by `hotswap-operator --help`.
OPTIONS: tuple[Option, ...] = (
    Option("agent_port", None, PREFIX + "AGENT_PORT", "port of the agent sidecar in every pod", port(1)),
    Option("agent_scheme", None, PREFIX + "AGENT_SCHEME", "http or https towards the agents", _scheme),
    Option(
        "agent_token_file",
        None,
        PREFIX + "AGENT_TOKEN_FILE",
        "the agent bearer token, mounted from a Secret; re-read when it changes",
        Path,
    ),
    Option(
        "server_port",
        None,
        PREFIX + "SERVER_PORT",
        "data-plane port of the server in every pod (its /metrics feed the soak analysis)",
        port(1),
    ),
    Option(
        "request_timeout",
        None,
        PREFIX + "REQUEST_TIMEOUT_SECONDS",
        "bound on one HTTP request to an agent or a server, seconds",
        positive,
    ),
    Option(
        "poll_interval",
        None,
        PREFIX + "POLL_SECONDS",
        "how often a running operation or a waiting rollout is looked at, seconds",
        positive,
    ),
    Option(
        "resync_interval",
        None,
        PREFIX + "RESYNC_SECONDS",
        "how often a settled resource is re-checked for drift (pod events also wake it), seconds",
        positive,
    ),
    Option(
        "retry_backoff_max",
        None,
        PREFIX + "RETRY_BACKOFF_MAX_SECONDS",
        "ceiling of the exponential backoff between retries of a transient failure, seconds",
        positive,
    ),
    Option(
        "failed_pod_retry",
        None,
        PREFIX + "FAILED_POD_RETRY_SECONDS",
        "how long a pod that failed to converge on a known-good version waits before another try, seconds",
        positive,
    ),
    Option(
        "peering_lifetime",
        None,
        PREFIX + "PEERING_LIFETIME_SECONDS",
        "with kopf peering (--peering): how long a replica's keep-alive counts, so how soon a dead "
        "driving replica is taken over, seconds (kopf's settings.peering.lifetime)",
        at_least(2),
    ),
)


def variables_help() -> str:
    """The operator's variables with their defaults, for ``hotswap-operator --help``."""
    return "hotswap-operator settings (environment variables):\n" + variables_table(OPTIONS, Config)
