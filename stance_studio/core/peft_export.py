"""Export a factorised stance checkpoint as a PEFT LoRA adapter folder
(``adapter_config.json`` + ``adapter_model.safetensors``).

Each low-rank delta B @ A becomes one LoRA pair with ``lora_alpha == r`` (scaling
1), so ``PeftModel.from_pretrained`` reproduces the app's own apply exactly. Only
``nn.Linear`` weights export: PEFT would load a pair on an embedding or norm
without complaint yet leave the logits unchanged, so those are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import save_file

from stance_studio.core.checkpoints import ACTIVATION, StanceCheckpoint, not_linear, transposed
from stance_studio.core.deltas import LowRankDelta
from stance_studio.core.errors import CheckpointError, StorageError
from stance_studio.core.storage import TEMP_PREFIX, TEMP_SUFFIX, as_os_error, storage_error

_PREFIX = "base_model.model."
_EMBEDDING_NAMES = ("embed_tokens.", "embed_positions.", "word_embeddings.", "position_embeddings.", "wte.", "wpe.")


def _not_linear(ckpt: StanceCheckpoint, base) -> dict[str, str]:
    """Touched parameters that are not nn.Linear weights: from ``base`` if given, else
    as the checkpoint recorded them (older files: embeddings recognised by name)."""
    if base is not None:
        return not_linear(base.model, ckpt.deltas)
    recorded = ckpt.base.get("not_linear")
    if isinstance(recorded, dict):
        return {name: str(kind) for name, kind in recorded.items() if name in ckpt.deltas}
    return {name: "an embedding" for name in ckpt.deltas if any(k in name for k in _EMBEDDING_NAMES)}


def _transposed(ckpt: StanceCheckpoint, base) -> list[str]:
    """Touched weights stored (in × out) (GPT-2's Conv1D): from ``base`` if given, else as
    recorded (files that record nothing were made on models without them)."""
    if base is not None:
        return transposed(base.model, list(ckpt.deltas))
    recorded = ckpt.base.get("transposed")
    return [name for name in recorded if name in ckpt.deltas] if isinstance(recorded, list) else []


def _refuse_unexportable(ckpt: StanceCheckpoint, base) -> None:
    if ckpt.kind == ACTIVATION:
        raise CheckpointError(
            f"{ckpt.name!r} is an activation-steering stance: it adds vectors to hidden states and has no weight "
            "delta for a LoRA adapter. Export it with `export-gguf` as a llama.cpp control vector.")
    if not ckpt.deltas:
        raise CheckpointError(f"Checkpoint {ckpt.name!r} changes no parameter; there is no adapter to export.")
    flat = sorted(name for name, d in ckpt.deltas.items() if len(d.shape) != 2)
    if flat:
        raise CheckpointError(
            f"Checkpoint {ckpt.name!r} changes {len(flat)} 1-D parameters ({', '.join(flat[:3])}"
            f"{', ...' if len(flat) > 3 else ''}): norm scales or biases, which a LoRA adapter cannot hold. "
            "Only a checkpoint that changes Linear weights alone (e.g. from LoRA training) exports."
        )
    other = _not_linear(ckpt, base)
    if other:
        name = sorted(other)[0]
        raise CheckpointError(
            f"Checkpoint {ckpt.name!r} changes {name} ({other[name]}), which is not the weight of a Linear "
            f"module{f' (and {len(other) - 1} more)' if len(other) > 1 else ''}; a PEFT LoRA adapter would "
            "load it but leave the model unchanged. Only a checkpoint that changes Linear weights alone "
            "(e.g. from LoRA training) exports."
        )


def export_peft(ckpt: StanceCheckpoint, outdir: str | os.PathLike, base=None) -> Path:
    """Write ``ckpt`` as a PEFT adapter folder at ``outdir`` (atomically); ``base``
    (the model it was made on), if given, is checked for Linear modules directly."""
    _refuse_unexportable(ckpt, base)
    dense = [name for name, d in ckpt.deltas.items() if not isinstance(d, LowRankDelta)]
    if dense:
        raise CheckpointError(
            f"Checkpoint {ckpt.name!r} holds {len(dense)} dense deltas (e.g. {dense[0]}); only factorised "
            "checkpoints (extraction policy rank:R or energy:F without dense modules, or LoRA training) "
            "export to PEFT. Re-extract it with a rank policy."
        )
    flipped = set(_transposed(ckpt, base))
    if flipped and flipped != set(ckpt.deltas):
        raise CheckpointError(
            f"Checkpoint {ckpt.name!r} changes both Conv1D weights (stored in × out, e.g. {sorted(flipped)[0]}) and "
            "Linear weights; one PEFT adapter transposes all of its pairs or none. Extract the two kinds into "
            "separate checkpoints (train with --modules naming one kind)."
        )
    tensors = {}
    ranks: dict[str, int] = {}
    for name, delta in ckpt.deltas.items():
        if not name.endswith(".weight"):
            raise CheckpointError(f"Checkpoint {ckpt.name!r}: {name} is not a weight matrix; PEFT cannot hold it.")
        module = name[: -len(".weight")]
        # PEFT's pair computes lora_B @ lora_A, transposed on a Conv1D weight (in × out)
        A, B = (delta.B.T, delta.A.T) if name in flipped else (delta.A, delta.B)
        tensors[f"{_PREFIX}{module}.lora_A.weight"] = A.float().contiguous()
        tensors[f"{_PREFIX}{module}.lora_B.weight"] = B.float().contiguous()
        ranks[module] = delta.rank
    top = max(ranks.values())
    config = {
        "alpha_pattern": {m: r for m, r in sorted(ranks.items()) if r != top},
        "base_model_name_or_path": ckpt.base.get("model"),
        "bias": "none",
        "fan_in_fan_out": bool(flipped),
        "inference_mode": True,
        "init_lora_weights": True,
        "lora_alpha": top,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": top,
        "rank_pattern": {m: r for m, r in sorted(ranks.items()) if r != top},
        "target_modules": sorted(ranks),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }
    try:
        return _write_adapter(Path(outdir).expanduser(), config, tensors)
    except (OSError, SafetensorError) as exc:
        raise storage_error(as_os_error(exc) or OSError(str(exc)), "write the PEFT adapter to", outdir) from exc


def _write_adapter(outdir: Path, config: dict, tensors: dict) -> Path:
    """A new folder appears whole (built beside it, then renamed); in an existing
    adapter folder only the adapter's own two files are replaced, both written before
    either is renamed into place, and nothing else in the folder is touched."""
    if outdir.exists() and not outdir.is_dir():
        raise StorageError(f"{outdir} is a file; choose a folder (new, empty, or holding a PEFT adapter).")
    if outdir.is_dir():
        entries = [p.name for p in outdir.iterdir()]
        if entries and "adapter_config.json" not in entries:
            raise StorageError(
                f"{outdir} is not empty and holds no PEFT adapter ({len(entries)} other files); "
                "choose a new or empty folder."
            )
        # both files are written in full before either replaces its old version, so a
        # failed write (a full disk) leaves the old adapter whole, weights and config
        temps: dict[str, Path] = {}
        try:
            for filename, write in _ADAPTER_FILES.items():
                fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=outdir)
                os.close(fd)
                temps[filename] = Path(tmp)
                write(temps[filename], config, tensors)
            for filename, tmp in temps.items():
                os.replace(tmp, outdir / filename)
        finally:
            for tmp in temps.values():
                tmp.unlink(missing_ok=True)
        return outdir
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".tmp-peft-", dir=outdir.parent))
    try:
        for filename, write in _ADAPTER_FILES.items():
            write(tmp_dir / filename, config, tensors)
        os.rename(tmp_dir, outdir)  # fails rather than replace a folder that appeared meanwhile
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return outdir


def _write_config(path: Path, config: dict, tensors: dict) -> None:
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _write_weights(path: Path, config: dict, tensors: dict) -> None:
    save_file(tensors, str(path), metadata={"format": "pt"})


# the weights go first: a config naming new weights never sits beside old ones
_ADAPTER_FILES = {"adapter_model.safetensors": _write_weights, "adapter_config.json": _write_config}
