"""The server's one settings object, read from flags and ``HOTSWAP_*`` environment variables."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SwapMode = Literal["inplace", "double", "auto"]
DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "float16", "bfloat16"]

SWAP_MODES: tuple[SwapMode, ...] = ("inplace", "double", "auto")
DEVICES: tuple[DeviceName, ...] = ("auto", "cpu", "cuda")
DTYPES: tuple[DtypeName, ...] = ("auto", "float32", "float16", "bfloat16")


class SettingsError(ValueError):
    """A flag or environment variable has a bad value; the message names it."""


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

    @property
    def admin_enabled(self) -> bool:
        return self.admin_port > 0


# (flag, field, type, help). The environment variable is HOTSWAP_<FIELD upper-cased>.
_OPTIONS: list[tuple[str, str, type, str]] = [
    (
        "--model",
        "model",
        Path,
        "model folder to serve at start (optional: without it the server starts empty)",
    ),
    ("--version", "version", str, "version id of --model (default: the folder name)"),
    ("--model-id", "model_id", str, "model name reported in /info and Cohere responses"),
    ("--host", "host", str, "data plane address"),
    ("--port", "port", int, "data plane port"),
    ("--admin-host", "admin_host", str, "admin plane address (loopback only)"),
    ("--admin-port", "admin_port", int, "admin plane port (0 disables it)"),
    ("--admin-token-file", "admin_token_file", Path, "file holding the admin bearer token"),
    ("--models-root", "models_root", Path, "folder that every preloaded path must lie inside"),
    ("--swap-mode", "swap_mode", str, "inplace | double | auto"),
    ("--device", "device", str, "auto | cpu | cuda"),
    ("--dtype", "dtype", str, "auto | float32 | float16 | bfloat16 (auto: float16 on CUDA)"),
    ("--max-batch-size", "max_batch_size", int, "pairs per model forward"),
    ("--max-documents", "max_documents", int, "documents per request (413 above)"),
    ("--max-body-bytes", "max_body_bytes", int, "request body size (413 above)"),
    ("--max-queue-pairs", "max_queue_pairs", int, "pairs waiting to be scored (429 above)"),
    ("--max-input-length", "max_input_length", int, "token limit per pair (default: the model's)"),
    ("--drain-timeout", "drain_timeout_s", float, "seconds to finish queued work on SIGTERM"),
    ("--torch-threads", "torch_threads", int, "torch intra-op threads (default: torch's choice)"),
    ("--log-level", "log_level", str, "logging level"),
]


def _env_name(field: str) -> str:
    return "HOTSWAP_" + field.upper().removesuffix("_S")


def _convert(name: str, kind: type, raw: str) -> object:
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}: expected {kind.__name__}, got {raw!r}") from None


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Flags win over environment variables, which win over defaults. Errors name the bad input."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="hotswap-server", description="Hot-swappable reranker server")
    for flag, field, _kind, help_text in _OPTIONS:
        parser.add_argument(flag, dest=field, default=None, help=f"{help_text} [{_env_name(field)}]")
    args = parser.parse_args(argv)
    values: dict[str, object] = {}
    for flag, field, kind, _help in _OPTIONS:
        raw = getattr(args, field)
        name = flag
        if raw is None:
            raw = env.get(_env_name(field))
            name = _env_name(field)
        if raw is None or raw == "":
            continue
        values[field] = _convert(name, kind, raw)
    settings = Settings(**values)  # type: ignore[arg-type]
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    if s.swap_mode not in SWAP_MODES:
        raise SettingsError(
            f"--swap-mode/HOTSWAP_SWAP_MODE: expected one of {SWAP_MODES}, got {s.swap_mode!r}"
        )
    if s.device not in DEVICES:
        raise SettingsError(f"--device/HOTSWAP_DEVICE: expected one of {DEVICES}, got {s.device!r}")
    if s.dtype not in DTYPES:
        raise SettingsError(f"--dtype/HOTSWAP_DTYPE: expected one of {DTYPES}, got {s.dtype!r}")
    for field in ("max_batch_size", "max_documents", "max_body_bytes", "max_queue_pairs"):
        if getattr(s, field) < 1:
            raise SettingsError(f"{field}: must be >= 1, got {getattr(s, field)}")
    if s.max_input_length is not None and s.max_input_length < 8:
        raise SettingsError(f"max_input_length: must be >= 8, got {s.max_input_length}")
    if s.admin_enabled:
        # The admin plane never leaves the pod: refuse anything but a loopback address.
        try:
            loopback = ipaddress.ip_address(s.admin_host).is_loopback
        except ValueError:
            loopback = s.admin_host == "localhost"
        if not loopback:
            raise SettingsError(
                f"--admin-host/HOTSWAP_ADMIN_HOST: must be a loopback address, got {s.admin_host!r}"
            )
        if s.admin_token_file is None:
            raise SettingsError(
                "--admin-token-file/HOTSWAP_ADMIN_TOKEN_FILE: required while the admin plane is on"
            )
    if s.model is not None and not s.model.is_dir():
        raise SettingsError(f"--model/HOTSWAP_MODEL: not a folder: {s.model}")


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise SettingsError(f"admin token file {path}: {e.strerror}") from None
    if len(token) < 16:
        raise SettingsError(f"admin token file {path}: token must be at least 16 characters")
    return token
