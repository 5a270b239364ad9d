"""The server's one settings object, read from flags and ``HOTSWAP_*`` environment variables.

The pattern (and :class:`SettingsError`) is shared with the agent and the operator:
:mod:`hotswap_contract.settings`. Each default is the default of its ``Settings`` field, written
once; ``--help`` shows it with the variable.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hotswap_contract.logs import LOG_FORMATS
from hotswap_contract.settings import (
    Option,
    SettingsError,
    add_options,
    at_least,
    choice,
    integer,
    number,
    port,
    resolve,
)

__all__ = ["OPTIONS", "Settings", "SettingsError", "parse_settings", "read_token", "validate"]

SwapMode = Literal["inplace", "double", "auto"]
DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "float16", "bfloat16"]

SWAP_MODES: tuple[SwapMode, ...] = ("inplace", "double", "auto")
DEVICES: tuple[DeviceName, ...] = ("auto", "cpu", "cuda")
DTYPES: tuple[DtypeName, ...] = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Settings:
    model: Path | None = None
    version: str | None = None
    model_id: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    admin_token_file: Path | None = None
    models_root: Path = Path("/models")
    swap_mode: SwapMode = "auto"
    device: DeviceName = "auto"
    dtype: DtypeName = "auto"
    max_batch_size: int = 32
    max_documents: int = 1000
    max_body_bytes: int = 2 * 1024 * 1024
    max_queue_pairs: int = 8192
    max_input_length: int | None = None
    drain_timeout_s: float = 30.0
    torch_threads: int | None = None
    log_level: str = "INFO"
    log_format: str = "text"

    @property
    def admin_enabled(self) -> bool:
        return self.admin_port > 0


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"not a log level: {raw!r}")
    return level


def _option(flag: str, field: str, text: str, parse: Callable[[str], Any] = str, **kw: Any) -> Option:
    """The variable is ``HOTSWAP_`` and the flag's name: ``--drain-timeout``: ``HOTSWAP_DRAIN_TIMEOUT``."""
    env = "HOTSWAP_" + flag.removeprefix("--").upper().replace("-", "_")
    return Option(field, flag, env, text, parse, **kw)


# Order is the order of --help; defaults are the Settings fields above.
OPTIONS: tuple[Option, ...] = (
    _option("--model", "model", "model folder to serve at start (without it the server starts empty)", Path),
    _option("--version", "version", "version id of --model", default_help="the folder name"),
    _option(
        "--model-id", "model_id", "model name in /info and Cohere responses", default_help="the folder name"
    ),
    _option("--host", "host", "data plane address"),
    _option("--port", "port", "data plane port", port()),
    _option("--admin-host", "admin_host", "admin plane address (loopback only)"),
    _option("--admin-port", "admin_port", "admin plane port (0 disables it)", port()),
    _option(
        "--admin-token-file",
        "admin_token_file",
        "file holding the admin bearer token",
        Path,
        default_help="none (required while the admin plane is on)",
    ),
    _option("--models-root", "models_root", "folder that every preloaded path must lie inside", Path),
    _option("--swap-mode", "swap_mode", "inplace | double | auto", choice(SWAP_MODES)),
    _option("--device", "device", "auto | cpu | cuda", choice(DEVICES)),
    _option(
        "--dtype", "dtype", "auto | float32 | float16 | bfloat16 (auto: float16 on CUDA)", choice(DTYPES)
    ),
    _option("--max-batch-size", "max_batch_size", "pairs per model forward", at_least(1)),
    _option("--max-documents", "max_documents", "documents per request (413 above)", at_least(1)),
    _option("--max-body-bytes", "max_body_bytes", "request body size in bytes (413 above)", at_least(1)),
    _option("--max-queue-pairs", "max_queue_pairs", "pairs waiting to be scored (429 above)", at_least(1)),
    _option(
        "--max-input-length",
        "max_input_length",
        "token limit per pair",
        at_least(8),
        default_help="the model's",
    ),
    _option("--drain-timeout", "drain_timeout_s", "seconds to finish queued work on SIGTERM", number),
    _option(
        "--torch-threads", "torch_threads", "torch intra-op threads", integer, default_help="torch's choice"
    ),
    _option("--log-level", "log_level", "DEBUG, INFO, WARNING, ERROR or CRITICAL", _log_level),
    _option(
        "--log-format",
        "log_format",
        "text | json (one object a line, with the access log's fields)",
        choice(LOG_FORMATS),
    ),
)
_NAMES = {o.field: o.names for o in OPTIONS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotswap-server",
        description="Hot-swappable reranker server",
        epilog="Each flag also reads the HOTSWAP_* variable shown with it; a flag wins over it.",
    )
    add_options(parser, OPTIONS, Settings)
    return parser


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Flags win over environment variables, which win over defaults. Errors name the bad input."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    settings = Settings(**resolve(OPTIONS, args, env))
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    """What no single value says alone (each value is checked by its option's parser)."""
    if s.admin_enabled:
        # The admin plane never leaves the pod: refuse anything but a loopback address.
        try:
            loopback = ipaddress.ip_address(s.admin_host).is_loopback
        except ValueError:
            loopback = s.admin_host == "localhost"
        if not loopback:
            raise SettingsError(f"{_NAMES['admin_host']}: must be a loopback address, got {s.admin_host!r}")
        if s.admin_token_file is None:
            raise SettingsError(f"{_NAMES['admin_token_file']}: required while the admin plane is on")
    if s.model is not None and not s.model.is_dir():
        raise SettingsError(f"{_NAMES['model']}: not a folder: {s.model}")


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise SettingsError(f"admin token file {path}: {e.strerror}") from None
    if len(token) < 16:
        raise SettingsError(f"admin token file {path}: token must be at least 16 characters")
    return token
