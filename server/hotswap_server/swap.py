"""Active, staged and previous versions, and the swap between them.

The manager owns the lifecycle of model versions; the engine owns the requests. An
activation never loads anything: it moves an already validated host copy into service.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from hotswap_contract.admin import ScoredSlot
from hotswap_contract.digest import DigestError
from hotswap_contract.versions import InvalidVersion, check_version

from .devices import Placement, device_peak, has_room_for, memory_figures, reset_device_peak
from .engine import Engine, Slot
from .errors import (
    BackendError,
    Busy,
    Forbidden,
    HotswapError,
    InvalidModel,
    NoPrevious,
    NotFound,
    NotStaged,
    PayloadTooLarge,
    ScoreFailed,
    ScoreTimeout,
    ValidationError,
    VersionConflict,
)
from .loaded import HostCopy
from .metrics import ServerMetrics
from .modelload import LoadedVersion, load_version
from .scoring import query_overhead, runner_for, to_relevance
from .settings import Settings
from .wire import f32

log = logging.getLogger(__name__)

# An upload (host copy -> live tensors) copies at most this many bytes per copy call, so the
# forwards on the default stream interleave with it rather than queue behind a whole tensor.
UPLOAD_CHUNK_BYTES = 64 * 1024 * 1024
# How many times an upload is tried from the intact host copy before the live model is put back.
UPLOAD_ATTEMPTS = 2
# The time bound of an admin score call on a staged or previous copy (checked between batches).
SCORE_TIMEOUT_S = 120.0

SwapKind = Literal["inplace", "double", "replace"]


# Longer than any path a models root needs (Linux's PATH_MAX is 4096 bytes).
MAX_PATH_CHARS = 4096
# What a model folder's content can make the loader raise (a link the digest refuses, a JSON file of
# the wrong shape, a config nested too deep): the folder's fault, so a 422 with the reason, not a 500.
_FOLDER_FAULTS = (
    DigestError,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    RecursionError,
    OSError,
)


def _load_checked(version: str, folder: Path, dtype: torch.dtype, **kwargs: Any) -> LoadedVersion:
    try:
        return load_version(version, folder, dtype, **kwargs)
    except HotswapError:
        raise
    except _FOLDER_FAULTS as e:
        log.warning("refused %s from %s: %s: %s", version, folder, type(e).__name__, e)
        reason = str(e)[:300] or type(e).__name__
        raise InvalidModel(f"the model folder cannot be loaded: {type(e).__name__}: {reason}") from None


def device_copy(
    module: torch.nn.Module, device: torch.device, stream: torch.cuda.Stream | None = None
) -> torch.nn.Module:
    """A copy of ``module`` whose tensors live on ``device``; ``module`` itself is left as it is.

    ``deepcopy`` with every parameter and buffer already in its memo copies the structure only:
    each tensor is copied once, straight to the device (tied weights stay tied). The new tensors
    are allocated on the current stream (the one forwards run on, so freeing them later is
    ordered after the forwards that read them, and no side stream keeps a cache segment of its
    own); with ``stream`` the copies run there, from pinned memory, without blocking forwards.
    """
    memo: dict[int, Any] = {}
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for p in module.parameters():
            if id(p) not in memo:
                dst = torch.empty(p.shape, dtype=p.dtype, device=device)
                memo[id(p)] = torch.nn.Parameter(dst, requires_grad=False)
                pairs.append((dst, p.detach()))
        for b in module.buffers():
            if id(b) not in memo:
                memo[id(b)] = dst = torch.empty(b.shape, dtype=b.dtype, device=device)
                pairs.append((dst, b.detach()))
        with _on_stream(stream):
            for dst, src in pairs:
                dst.copy_(src, non_blocking=stream is not None)
        if stream is not None:
            stream.synchronize()
    return copy.deepcopy(module, memo)


@contextlib.contextmanager
def _on_stream(stream: torch.cuda.Stream | None) -> Iterator[None]:
    """Run the block's copies on ``stream`` after everything already queued on the current one."""
    if stream is None:
        yield
        return
    stream.wait_stream(torch.cuda.current_stream(stream.device))
    with torch.cuda.stream(stream):
        yield


def _copy_chunk(dst: torch.Tensor, src: torch.Tensor) -> None:
    """One bounded copy of an upload (its own function so that tests can inject a failure)."""
    dst.copy_(src, non_blocking=True)


def upload(host: HostCopy, live: torch.nn.Module, stream: torch.cuda.Stream | None) -> None:
    """Copy every tensor of ``host`` into ``live``'s tensors: one host-to-device pass, in chunks
    of at most :data:`UPLOAD_CHUNK_BYTES`, on ``stream`` (the server's one side stream) on CUDA.

    The live tensors keep their storage (same data pointers), nothing is copied back and no
    scratch memory is allocated: ``host`` is not modified, so it stays the intact source of a
    retry or a rollback.
    """
    live_sd = live.state_dict()
    with torch.no_grad(), _on_stream(stream):
        for name, dst in live_sd.items():
            src = host.views[name]
            if tuple(src.shape) != tuple(dst.shape) or src.dtype != dst.dtype:
                raise RuntimeError(
                    f"tensor {name}: host copy {src.dtype}{list(src.shape)}, live {dst.dtype}{list(dst.shape)}"
                )
            d, s = dst.view(-1), src.view(-1)
            step = max(1, UPLOAD_CHUNK_BYTES // max(1, d.element_size()))
            for start in range(0, d.numel(), step):
                _copy_chunk(d[start : start + step], s[start : start + step])
    if stream is not None:
        stream.synchronize()


def upload_recovering(
    live: torch.nn.Module,
    incoming: HostCopy,
    outgoing: HostCopy | None,
    stream: torch.cuda.Stream | None,
) -> None:
    """Upload ``incoming`` into ``live``; a copy that fails half-way is retried from the intact
    host copy (:data:`UPLOAD_ATTEMPTS` in all), and if it still fails the live model is put back
    on ``outgoing`` from its own host copy: the live weights end fully on one version.

    Raises :class:`BackendError` when the live model is not on ``incoming`` (it is then on
    ``outgoing``, or, if even that upload failed, the error says the weights are mixed).
    """
    error: BaseException | None = None
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        try:
            upload(incoming, live, stream)
            return
        except Exception as e:  # a device fault, an interrupted copy
            error = e
            log.warning(
                "upload attempt %d of %d failed: %s: %s", attempt, UPLOAD_ATTEMPTS, type(e).__name__, e
            )
    if outgoing is None:
        raise BackendError(f"the weight upload failed: {type(error).__name__}: {error}") from error
    try:
        upload(outgoing, live, stream)
    except Exception as e:
        log.critical("restoring the outgoing weights failed too; the live weights are mixed: %s", e)
        raise BackendError(
            f"the weight upload failed ({type(error).__name__}: {error}) and restoring the previous "
            f"weights failed too ({type(e).__name__}: {e})"
        ) from e
    raise BackendError(
        f"the weight upload failed {UPLOAD_ATTEMPTS} times ({type(error).__name__}: {error}); "
        "the live model was restored to the version it served"
    ) from error


LOADER_NICE = 10  # how much lower the loading thread's CPU priority is than serving's


def _background_thread() -> None:
    """Make the calling thread background work: a lower CPU priority and one intra-op thread.

    A preload hashes, reads, copies and test-scores a whole model: on a busy CPU it competed with
    the forwards for the cores and widened the tail of every request around a swap. On Linux the
    nice value is per thread (``setpriority`` with the thread's id) and threads it starts, such as
    its OpenMP team, inherit it; elsewhere, or without permission, only the thread count applies.
    """
    torch.set_num_threads(1)
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, current + LOADER_NICE))
    except (AttributeError, OSError) as e:  # not Linux, or a sandbox that forbids it
        log.debug("the loading thread keeps its priority: %s", e)


def host_module(loaded: LoadedVersion) -> torch.nn.Module:
    """The module whose tensors are ``loaded``'s host copy (what a staged or previous version holds)."""
    if loaded.host is not None and loaded.host.module is not None:
        return loaded.host.module
    return loaded.module


def check_query(loaded: LoadedVersion, query: str) -> None:
    """The data plane's rule: pairs are truncated on the document side, so a query must leave room."""
    overhead = query_overhead(loaded, query)
    if overhead >= loaded.max_length:
        raise PayloadTooLarge(
            f"query is {overhead} tokens with the special tokens; the model's limit per pair is {loaded.max_length}"
        )


def validate_version(version: object) -> str:
    try:
        return check_version(version)
    except InvalidVersion as exc:
        raise ValidationError(str(exc)) from None


class SwapManager:
    def __init__(
        self, settings: Settings, placement: Placement, engine: Engine, metrics: ServerMetrics
    ) -> None:
        self.settings = settings
        self.placement = placement
        self.engine = engine
        self.metrics = metrics
        self.models_root = settings.models_root
        self.staged: LoadedVersion | None = None
        self.previous: LoadedVersion | None = None
        self.last_swap: dict[str, Any] | None = None
        self.operation: str | None = None
        # Loading and validating run here, off the model thread: serving continues meanwhile, and
        # first (the thread yields the CPU to forwards and uses one core; see _background_thread).
        self._loader = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="hotswap-loader", initializer=_background_thread
        )
        # One side stream for every upload of this server's life: a stream per swap would keep a
        # cache segment of its own each time, and reserved memory would creep up swap after swap.
        self.stream: torch.cuda.Stream | None = (
            torch.cuda.Stream(placement.device) if placement.is_cuda else None
        )
        self._swap_device: dict[str, int] = {}

    @property
    def active(self) -> LoadedVersion | None:
        return self.engine.active.loaded if self.engine.active is not None else None

    # --- one control operation at a time ----------------------------------------------------
    async def _exclusive_op(self, name: str, fn: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        if self.operation is not None:
            raise Busy(f"{self.operation} is in progress; retry when it finishes")
        self.operation = name
        try:
            return await fn()
        finally:
            self.operation = None

    def resolve_path(self, raw: object) -> Path:
        if not isinstance(raw, str) or not raw:
            raise ValidationError("path must be a non-empty string")
        if len(raw) > MAX_PATH_CHARS:
            raise ValidationError(f"path is longer than {MAX_PATH_CHARS} characters")
        if "\x00" in raw:
            raise ValidationError("path must not contain NUL")
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("path is not valid Unicode (a lone surrogate)") from None
        root = self.models_root.resolve()
        candidate = Path(raw) if Path(raw).is_absolute() else root / raw
        # Lexical check with ".." collapsed: pathlib's is_relative_to keeps "..", so root/"../../etc"
        # would count as inside and a missing target would answer 404 rather than 403.
        inside = Path(os.path.normpath(candidate.absolute())).is_relative_to(root)
        try:
            resolved = candidate.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError, RuntimeError):
            # Say "outside" before "missing" so the reply does not probe paths outside the root.
            if not inside:
                raise Forbidden(f"path must lie inside the models root {root}") from None
            raise NotFound(f"no model folder at {raw}") from None
        except OSError as e:  # a name too long, a loop of links, no permission
            if not inside:
                raise Forbidden(f"path must lie inside the models root {root}") from None
            raise ValidationError(f"path cannot be used: {e.strerror or type(e).__name__}") from None
        if not resolved.is_relative_to(root):
            raise Forbidden(f"path must lie inside the models root {root} (after resolving links)")
        if not resolved.is_dir():
            raise NotFound(f"not a folder: {raw}")
        return resolved

    # --- operations ----------------------------------------------------------------------------
    async def preload(self, version: str, raw_path: object, digest: str | None = None) -> dict[str, Any]:
        validate_version(version)
        if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise ValidationError("digest must be 64 lowercase hex characters")
        path = self.resolve_path(raw_path)
        return await self._exclusive_op("preload", lambda: self._preload(version, path, digest))

    async def _preload(self, version: str, path: Path, digest: str | None) -> dict[str, Any]:
        active = self.active
        for known in (self.staged, self.previous, active):
            if known is not None and known.version == version and known.path != path:
                raise VersionConflict(f"version {version} is already loaded from {known.path}; use a new id")
            if (
                known is not None
                and digest is not None
                and known.version == version
                and known.digest != digest
            ):
                raise VersionConflict(f"version {version} is already loaded with digest {known.digest}")
        if active is not None and active.version == version:
            return {"staged": None, "compatible": "active", "active": active.record()}
        if self.staged is not None and self.staged.version == version:
            return self._staged_reply()
        if self.previous is not None and self.previous.version == version:
            # The outgoing weights of the last swap are still in host memory: reuse them.
            self.staged, self.previous = self.previous, None
            return self._staged_reply()
        self.staged = None  # a new version replaces the staged one; free it before loading
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(
            self._loader,
            lambda: _load_checked(
                version,
                path,
                self.placement.dtype,
                pin_memory=self.placement.is_cuda,
                max_input_length=self.settings.max_input_length,
                expected_digest=digest,
            ),
        )
        self.staged = loaded
        return self._staged_reply()

    def _compatible(self, incoming: LoadedVersion) -> bool:
        active = self.active
        return active is not None and active.kind == incoming.kind and active.signature == incoming.signature

    def _staged_reply(self) -> dict[str, Any]:
        assert self.staged is not None
        return {
            "staged": self.staged.record(),
            "compatible": "inplace" if self._compatible(self.staged) else "replace",
        }

    async def activate(self, version: str) -> dict[str, Any]:
        validate_version(version)
        return await self._exclusive_op("activate", lambda: self._activate(version))

    async def _activate(self, version: str) -> dict[str, Any]:
        active = self.active
        if active is not None and active.version == version:
            return self._swap_reply("noop", 0.0)
        if self.staged is None or self.staged.version != version:
            staged = self.staged.version if self.staged else None
            raise NotStaged(f"version {version} is not staged (staged: {staged}); preload it first")
        incoming, self.staged = self.staged, None
        try:
            outgoing, mode, pause = await self._bring_in(incoming)
        except BaseException:
            self.staged = incoming
            raise
        self.previous = outgoing
        return self._record_swap(outgoing, mode, pause)

    async def rollback(self) -> dict[str, Any]:
        return await self._exclusive_op("rollback", self._rollback)

    async def _rollback(self) -> dict[str, Any]:
        if self.previous is None:
            raise NoPrevious("there is no previous version to roll back to")
        incoming, self.previous = self.previous, None
        try:
            outgoing, mode, pause = await self._bring_in(incoming)
        except BaseException:
            self.previous = incoming
            raise
        self.previous = outgoing
        return self._record_swap(outgoing, mode, pause)

    async def run_exclusive(self, name: str, fn: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Run ``fn`` as the one control operation (409 ``operation_in_progress`` while another runs)."""
        return await self._exclusive_op(name, fn)

    def held(self, version: str) -> tuple[ScoredSlot, LoadedVersion] | None:
        """The slot that holds ``version`` and its copy, or None."""
        for name, loaded in (("active", self.active), ("staged", self.staged), ("previous", self.previous)):
            if loaded is not None and loaded.version == version:
                return name, loaded  # type: ignore[return-value]
        return None

    async def score_copy(self, loaded: LoadedVersion, cases: list[tuple[str, list[str]]]) -> dict[str, Any]:
        """Score ``cases`` with a staged or previous version's own copy, in the loading thread.

        The live model and the request queue are never touched: on CPU the forwards run on the host
        copy with one intra-op thread (live forwards keep the rest); on CUDA on a temporary device
        copy when the device has room for it beside the live model (the same headroom rule as a
        double swap), else on the pinned host copy. Batches of ``max_batch_size`` pairs; the call
        stops with 504 ``score_timeout`` when ``score_timeout_s`` is over, checked between batches.
        """
        deadline = time.monotonic() + SCORE_TIMEOUT_S
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._loader, partial(self._score_copy_sync, loaded, cases, deadline)
        )

    def _score_copy_sync(
        self, loaded: LoadedVersion, cases: list[tuple[str, list[str]]], deadline: float
    ) -> dict[str, Any]:
        started = time.perf_counter()
        target: LoadedVersion | None = loaded
        device = "cpu"
        if self.placement.is_cuda and has_room_for(self.placement, loaded.nbytes):
            target = replace(
                loaded, module=device_copy(host_module(loaded), self.placement.device, self.stream)
            )
            device = str(self.placement.device)
        assert target is not None
        threads = torch.get_num_threads()
        if device == "cpu":
            torch.set_num_threads(1)
        runner: Any = None
        try:
            runner = runner_for(target)
            out = []
            for query, docs in cases:
                check_query(loaded, query)
                raw = np.empty(len(docs), dtype=np.float32)
                tokens = 0
                for start in range(0, len(docs), self.settings.max_batch_size):
                    if time.monotonic() > deadline:
                        raise ScoreTimeout(f"scoring took longer than {SCORE_TIMEOUT_S:g}s; send fewer cases")
                    chunk = docs[start : start + self.settings.max_batch_size]
                    try:
                        values, counts = runner.score([query] * len(chunk), chunk)
                    except Exception as e:
                        log.warning("scoring with %s failed: %s: %s", loaded.version, type(e).__name__, e)
                        raise ScoreFailed(
                            f"version {loaded.version} failed to score: {type(e).__name__}: {str(e)[:200]}"
                        ) from None
                    raw[start : start + len(chunk)] = values
                    tokens += int(counts.sum())
                relevance = to_relevance(raw, loaded.kind)
                out.append({"scores": [f32(v) for v in relevance], "tokens": tokens})
        finally:
            if device == "cpu":
                torch.set_num_threads(threads)
            if target is not loaded:
                # Drop the device copy: its blocks stay in the caching allocator, where forwards
                # reuse them and the free-memory figure counts them (no empty_cache).
                runner = target = None
        return {
            "cases": out,
            "device": device,
            "durationMs": round((time.perf_counter() - started) * 1000, 3),
        }

    async def discard(self) -> dict[str, Any]:
        async def _discard() -> dict[str, Any]:
            self.staged = None
            return {"staged": None}

        return await self._exclusive_op("discard", _discard)

    async def boot(self, folder: Path, version: str) -> None:
        """Serve ``folder`` at start (the ``--model`` flag): load, then bring it in."""
        validate_version(version)
        self.operation = "boot"
        try:
            await self._preload(version, folder.resolve(), None)
            await self._activate(version)
        finally:
            self.operation = None

    # --- the swap itself -----------------------------------------------------------------------
    def _choose_mode(self, incoming: LoadedVersion) -> SwapKind:
        if not self._compatible(incoming):
            return "replace"
        mode = self.settings.swap_mode
        if mode == "auto":
            return "double" if has_room_for(self.placement, incoming.nbytes) else "inplace"
        return mode

    async def _bring_in(self, incoming: LoadedVersion) -> tuple[LoadedVersion | None, str, float]:
        """Make ``incoming`` (host) the active version; return (outgoing on host, mode, pause s).

        On CUDA the device's peak counter is reset first, so ``lastSwap.devicePeakBytes`` is the
        most this swap (and the forwards beside it) allocated, not a peak since the server started.
        """
        before = reset_device_peak(self.placement)
        try:
            return await self._bring_in_now(incoming)
        finally:
            peak = device_peak(self.placement)
            self._swap_device = (
                {"deviceBeforeBytes": before, "devicePeakBytes": peak}
                if before is not None and peak is not None
                else {}
            )

    async def _bring_in_now(self, incoming: LoadedVersion) -> tuple[LoadedVersion | None, str, float]:
        current = self.engine.active
        mode = self._choose_mode(incoming)
        if current is None:
            slot = Slot.of(await self._to_device(incoming))
            self.engine.set_active(slot)
            return None, "initial", 0.0
        if mode == "inplace":
            return await self._swap_inplace(current, incoming)
        if mode == "double" or not self.placement.is_cuda or has_room_for(self.placement, incoming.nbytes):
            return await self._swap_double(current, incoming, mode)
        return await self._replace_tight(current, incoming)

    async def _swap_inplace(self, slot: Slot, incoming: LoadedVersion) -> tuple[LoadedVersion, str, float]:
        """One upload from ``incoming``'s host copy into the live tensors, while no forward runs.
        The outgoing version keeps its own intact host copy: that is the previous version."""
        outgoing_meta = slot.loaded
        live_module = slot.loaded.module
        if incoming.host is None:
            raise BackendError(f"version {incoming.version} has no host copy to upload")

        def copy() -> None:
            upload_recovering(live_module, incoming.host, outgoing_meta.host, self.stream)  # type: ignore[arg-type]
            slot.replace(replace(incoming, module=live_module, loaded_at=datetime.now(UTC)))

        _, pause = await self.engine.exclusive(copy)
        outgoing = replace(outgoing_meta, module=host_module(outgoing_meta))
        return outgoing, "inplace", pause

    async def _swap_double(
        self, slot: Slot, incoming: LoadedVersion, mode: str
    ) -> tuple[LoadedVersion, str, float]:
        """A second live copy, uploaded on the side stream while the old one serves; then routing
        moves. The old live copy is simply dropped (its blocks go back to the caching allocator,
        no ``empty_cache``): its version keeps its pinned host copy, so nothing is copied back."""
        on_device = await self._to_device(incoming)
        self.engine.set_active(Slot.of(on_device))
        # New requests already go to the new slot; the old one finishes what it started.
        await self.engine.wait_idle(slot)
        outgoing = replace(slot.loaded, module=host_module(slot.loaded))
        return outgoing, mode, 0.0

    async def _replace_tight(self, slot: Slot, incoming: LoadedVersion) -> tuple[LoadedVersion, str, float]:
        """A different shape and no room for both: drain, drop the old live copy, upload the new.
        If the upload fails, the old version is uploaded again from its host copy."""
        old = slot.loaded
        outgoing = replace(old, module=host_module(old))

        def move() -> None:
            # Point the slot at the host copy so that the old device tensors are freed first.
            slot.replace(outgoing)
            try:
                slot.replace(self._to_device_sync(incoming))
            except Exception as e:
                log.warning("replace upload of %s failed: %s: %s", incoming.version, type(e).__name__, e)
                slot.replace(self._to_device_sync(outgoing))
                raise BackendError(
                    f"the weight upload failed ({type(e).__name__}: {e}); the live model was restored"
                ) from e

        _, pause = await self.engine.exclusive(move)
        return outgoing, "replace", pause

    def _to_device_sync(self, loaded: LoadedVersion) -> LoadedVersion:
        """A live copy of ``loaded`` from its host copy: its own tensors on the serving device
        (on CPU too, so that the host copy stays intact for the next swap)."""
        module = device_copy(host_module(loaded), self.placement.device, self.stream)
        return replace(loaded, module=module)

    async def _to_device(self, loaded: LoadedVersion) -> LoadedVersion:
        return await asyncio.get_running_loop().run_in_executor(self._loader, self._to_device_sync, loaded)

    def _record_swap(self, outgoing: LoadedVersion | None, mode: str, pause: float) -> dict[str, Any]:
        active = self.active
        assert active is not None
        self.last_swap = {
            "fromVersion": outgoing.version if outgoing else None,
            "toVersion": active.version,
            "mode": mode,
            "pauseMs": round(pause * 1000, 3),
            "at": datetime.now(UTC).isoformat(),
            **self._swap_device,
        }
        self.metrics.swaps.labels(mode).inc()
        self.metrics.swap_pause.observe(pause)
        self.metrics.last_swap_pause.set(pause)
        self.metrics.set_active(active.record())
        log.info(
            "swapped %s -> %s (%s, pause %.1f ms)",
            self.last_swap["fromVersion"],
            active.version,
            mode,
            pause * 1000,
        )
        return self._swap_reply(mode, pause)

    def _swap_reply(self, mode: str, pause: float) -> dict[str, Any]:
        return {
            "active": self.active.record() if self.active else None,
            "previous": self.previous.record() if self.previous else None,
            "mode": mode,
            "pauseMs": round(pause * 1000, 3),
        }

    def state(self) -> dict[str, Any]:
        active = self.active
        return {
            "active": active.record() if active else None,
            "staged": self.staged.record() if self.staged else None,
            "previous": self.previous.record() if self.previous else None,
            "swapMode": self.settings.swap_mode,
            "lastSwap": self.last_swap,
            "operation": self.operation,
            "memory": memory_figures(self.placement, active.nbytes if active else 0),
        }

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)
