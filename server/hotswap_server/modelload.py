"""Loading a model folder into host memory, validating it on the way.

Everything here runs before a version can be staged, and nothing here touches the live
model: a folder that fails any check is refused with a precise reason, and the caller's
serving model keeps its weights. Only ``*.safetensors`` files are read; pickles are never
loaded and ``trust_remote_code`` is never on.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from hotswap_contract.digest import folder_digest
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer
from transformers.initialization import no_init_weights

from .errors import InvalidModel
from .loaded import HostCopy, LoadedVersion, ModelKind, config_signature
from .safetensors_check import read_header
from .scoring import runner_for

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# Checkpoints written by older transformers carry these buffers; today's models compute them.
IGNORABLE_EXTRA_SUFFIXES = ("position_ids",)
CANARY_PAIRS = [
    ("what is machine learning", "Machine learning is a field of artificial intelligence."),
    ("what is machine learning", "Bananas are yellow fruit rich in potassium."),
]


class _PhaseClock:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.ms[phase] = round((now - self._last) * 1000, 3)
        self._last = now


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidModel(f"{path.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidModel(f"{path.name} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidModel(f"{path.name} is not a JSON object")
    return data


def detect_kind(folder: Path) -> tuple[ModelKind, Path]:
    """(kind, folder of the transformer) — sentence-transformers folders are bi-encoders."""
    modules = folder / "modules.json"
    if modules.exists():
        try:
            entries = json.loads(modules.read_text())
            transformer = next(e for e in entries if e.get("type", "").endswith("models.Transformer"))
        except (OSError, ValueError, StopIteration, AttributeError, TypeError):
            raise InvalidModel("modules.json has no sentence_transformers Transformer module") from None
        sub = (folder / transformer.get("path", "")).resolve()
        if not sub.is_relative_to(folder.resolve()):
            raise InvalidModel("modules.json points outside the model folder")
        return "bi-encoder", sub
    config = _read_json(folder / "config.json")
    archs = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "cross-encoder", folder
    raise InvalidModel(
        f"not a reranker: config.json architectures {archs} has no *ForSequenceClassification "
        "and there is no sentence-transformers modules.json"
    )


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise InvalidModel(f"only pickled weights found ({', '.join(pickles)}); *.safetensors required")
        raise InvalidModel("no *.safetensors weights in the folder")
    return files


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in _weight_files(folder):
        read_header(path)
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in f.keys():
                    if name in tensors:
                        raise InvalidModel(f"tensor {name} appears in more than one weight file")
                    tensors[name] = f.get_tensor(name)
        except InvalidModel:
            raise
        except Exception as e:  # the library's own refusal: keep its words, they are about the file
            raise InvalidModel(f"{path.name}: not a readable safetensors file: {e}") from None
    return tensors


def _max_length(config: Any, tokenizer: Any, cap: int | None) -> int:
    limit = int(getattr(config, "max_position_embeddings", 512) or 512)
    if "roberta" in str(getattr(config, "model_type", "")):
        # RoBERTa-family position ids start after the padding index.
        limit -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    tok_max = int(getattr(tokenizer, "model_max_length", limit) or limit)
    if tok_max < 1_000_000:
        limit = min(limit, tok_max)
    return min(limit, cap) if cap else limit


def _st_max_seq_length(folder: Path, cap: int | None) -> int | None:
    """sentence-transformers folders state the length they were trained for; honour it."""
    path = folder / "sentence_bert_config.json"
    if not path.exists():
        return cap
    value = _read_json(path).get("max_seq_length")
    if not isinstance(value, int) or value < 8:
        return cap
    return min(value, cap) if cap else value


def _build_skeleton(config: Any, kind: ModelKind, tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    with no_init_weights():
        if kind == "cross-encoder":
            return AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
        # Sentence-transformers checkpoints may or may not carry BERT's pooler; it is unused here.
        kwargs = {}
        if not any(k.startswith("pooler.") for k in tensors) and "bert" in str(config.model_type):
            kwargs["add_pooling_layer"] = False
        return AutoModel.from_config(config, trust_remote_code=False, **kwargs)


def _match_tensors(
    module: torch.nn.Module, tensors: dict[str, torch.Tensor], dtype: torch.dtype, *, pin: bool = False
) -> HostCopy:
    """Check ``tensors`` against ``module``'s state dict, then copy them, cast to ``dtype``,
    straight into one flat host buffer (pinned when ``pin``): one host copy, never a clone then
    a pinned clone. Each file tensor is dropped as soon as it is copied. The finite check runs on
    the cast values: a float32 weight of 1e6 is finite but becomes inf in float16."""
    expected = module.state_dict()
    prefix = getattr(module, "base_model_prefix", "")
    if prefix and not (set(tensors) & set(expected)):
        # A base-model checkpoint saved without its prefix (or with one the skeleton lacks).
        stripped = {k.removeprefix(prefix + "."): v for k, v in tensors.items()}
        prefixed = {f"{prefix}.{k}": v for k, v in tensors.items()}
        tensors = max((stripped, prefixed), key=lambda d: len(set(d) & set(expected)))
    else:
        tensors = dict(tensors)  # entries are dropped below as they are copied
    extra = sorted(k for k in set(tensors) - set(expected) if not k.endswith(IGNORABLE_EXTRA_SUFFIXES))
    missing = sorted(set(expected) - set(tensors))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) its config needs: {', '.join(missing[:5])}")
        if extra:
            parts.append(f"{len(extra)} unexpected tensor(s): {', '.join(extra[:5])}")
        raise InvalidModel("weights do not match config.json: " + "; ".join(parts))
    specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape):
            raise InvalidModel(
                f"tensor {name} has shape {list(got.shape)}, config.json implies {list(want.shape)}"
            )
        if got.is_floating_point() != want.is_floating_point():
            raise InvalidModel(f"tensor {name} has dtype {got.dtype}, expected a {want.dtype} tensor")
        specs[name] = (tuple(want.shape), dtype if got.is_floating_point() else got.dtype)
    host = HostCopy(specs, pin=pin)
    for name, view in host.views.items():
        # The copy owns its memory: nothing shares pages with the file's mapping, so nothing
        # faults in copy-on-write pages later.
        view.copy_(tensors.pop(name))
        if view.is_floating_point():
            bad = int((~torch.isfinite(view)).sum())
            if bad:
                raise InvalidModel(
                    f"tensor {name} has {bad} non-finite value(s) (NaN or Inf) in {str(dtype).removeprefix('torch.')}"
                )
    return host


def _pooling(folder: Path, transformer_dir: Path) -> tuple[str, bool]:
    entries = json.loads((folder / "modules.json").read_text())
    mode, normalize = "mean", False
    for e in entries:
        kind = str(e.get("type", ""))
        if kind.endswith("models.Pooling"):
            cfg = _read_json(folder / e.get("path", "") / "config.json")
            if cfg.get("pooling_mode_cls_token"):
                mode = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                mode = "max"
        if kind.endswith("models.Normalize"):
            normalize = True
    return mode, normalize


def load_version(
    version: str,
    folder: Path,
    dtype: torch.dtype,
    *,
    pin_memory: bool = False,
    max_input_length: int | None = None,
    expected_digest: str | None = None,
) -> LoadedVersion:
    """Read, validate and materialise ``folder`` in host memory (pinned when the target is CUDA)."""
    if not folder.is_dir():
        raise InvalidModel(f"{folder} is not a folder")
    # Wall seconds of each phase, reported with the version (``loadPhasesMs``): the rollout
    # benchmark's per-phase table reads them, and they say where a slow preload spent its time.
    clock = _PhaseClock()
    digest = folder_digest(folder)
    clock.lap("digest")
    if expected_digest is not None and digest != expected_digest:
        from .errors import DigestMismatch

        raise DigestMismatch(f"folder digest {digest} does not match the expected {expected_digest}")
    kind, tdir = detect_kind(folder)
    raw_config = _read_json(tdir / "config.json")
    if "auto_map" in raw_config:
        raise InvalidModel("config.json asks for custom code (auto_map); trust_remote_code is never enabled")
    tensors = read_tensors(tdir)
    clock.lap("read")
    try:
        config = AutoConfig.from_pretrained(str(tdir), local_files_only=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(
            str(folder if (folder / "tokenizer.json").exists() else tdir),
            local_files_only=True,
            trust_remote_code=False,
        )
    except Exception as e:
        raise InvalidModel(f"config or tokenizer cannot be loaded: {e}") from None
    if kind == "cross-encoder" and getattr(config, "num_labels", 1) != 1:
        raise InvalidModel(
            f"a reranker has one output logit; config.json says num_labels={config.num_labels}"
        )
    module = _build_skeleton(config, kind, tensors)
    host = _match_tensors(module, tensors, dtype, pin=pin_memory)
    del tensors
    # The module's tensors become views into the flat buffer: no second host copy.
    module.load_state_dict(host.views, strict=True, assign=True)
    module.eval().requires_grad_(False)
    host.module = module
    clock.lap("build")
    pooling, normalize = _pooling(folder, tdir) if kind == "bi-encoder" else ("cls", False)
    loaded = LoadedVersion(
        version=version,
        path=folder,
        digest=digest,
        kind=kind,
        architecture=(getattr(config, "architectures", None) or [type(module).__name__])[0],
        module=module,
        tokenizer=tokenizer,
        admission_tokenizer=copy.deepcopy(tokenizer),
        max_length=_max_length(config, tokenizer, _st_max_seq_length(folder, max_input_length)),
        pooling=pooling,
        normalize=normalize,
        host=host,
        config_signature=config_signature(config),
    )
    scores, _tokens = runner_for(loaded).score([q for q, _ in CANARY_PAIRS], [d for _, d in CANARY_PAIRS])
    if not all(math.isfinite(float(s)) for s in scores):
        raise InvalidModel(f"canary pairs scored non-finite values: {scores.tolist()}")
    clock.lap("check")
    loaded.load_phases_ms = clock.ms
    log.info("loaded %s from %s (%s, %s, digest %s)", version, folder, kind, loaded.architecture, digest[:12])
    return loaded
