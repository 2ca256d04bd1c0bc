"""Stances as GGUF files for llama.cpp and Ollama.

- A factorised weight stance becomes a **LoRA adapter**: ``general.type=adapter``,
  ``adapter.type=lora``, ``adapter.lora.alpha``, and per Linear weight a pair
  ``<gguf name>.lora_a`` (r × in) and ``<gguf name>.lora_b`` (out × r) under
  llama.cpp's tensor names (``blk.N.attn_q.weight`` …). llama.cpp scales each pair
  by alpha / r, so B is stored times r / alpha (exactly B when all ranks equal alpha);
  for the Llama family, rows of q/k factors are permuted as llama.cpp's converter
  permutes the base q/k weights for its rotary layout.
- A steering stance becomes a **control vector**: ``general.architecture=controlvector``,
  ``controlvector.model_hint``, ``controlvector.layer_count`` and one F32 tensor
  ``direction.N`` per steered layer N, which llama.cpp adds to the output of block N
  (as our hook does). llama.cpp cannot steer block 0, so a vector there is refused.

Files are written to a temporary file beside the target and renamed into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from stance_studio.core.checkpoints import ACTIVATION, StanceCheckpoint
from stance_studio.core.deltas import LowRankDelta
from stance_studio.core.errors import ExportError
from stance_studio.core.steering import applied_vectors

# transformers architecture → llama.cpp architecture, and whether q/k rows are permuted
_ARCHS = {
    "LlamaForCausalLM": ("LLAMA", True),
    "MistralForCausalLM": ("LLAMA", True),
    "Qwen2ForCausalLM": ("QWEN2", False),
    "Qwen3ForCausalLM": ("QWEN3", False),
    "Gemma2ForCausalLM": ("GEMMA2", False),
    "Phi3ForCausalLM": ("PHI3", False),
}


def gguf_architecture(architecture: str) -> tuple[str, bool]:
    """llama.cpp's name for a transformers architecture, and whether q/k are permuted."""
    import gguf

    if architecture not in _ARCHS:
        raise ExportError(
            f"No llama.cpp mapping for architecture {architecture}; GGUF export knows "
            f"{', '.join(sorted(_ARCHS))}. Export a PEFT adapter (export-peft) instead."
        )
    key, permute = _ARCHS[architecture]
    return gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, key)], permute


def permute_rows(rows: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's rotary permutation of a q/k weight's output rows (its converter's
    ``permute``), applied to a LoRA B factor, whose rows are those outputs."""
    out = rows.shape[0]
    return rows.reshape(n_head, 2, out // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _write(path: Path, arch: str, fill, overwrite: bool) -> Path:
    import gguf

    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; choose another file name or pass --overwrite.")
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name ending in .gguf.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".gguf.part", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        fill(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except OSError as exc:
        raise ExportError(f"Could not write {path}: {exc.strerror or exc}.") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def lora_tensors(ckpt: StanceCheckpoint, architecture: str, config) -> tuple[dict[str, np.ndarray], float]:
    """The adapter's tensors by GGUF name, and its alpha."""
    import gguf

    from stance_studio.core.peft_export import _refuse_unexportable

    _refuse_unexportable(ckpt, None)
    dense = [n for n, d in ckpt.deltas.items() if not isinstance(d, LowRankDelta)]
    if dense:
        raise ExportError(
            f"Checkpoint {ckpt.name!r} holds {len(dense)} dense deltas (e.g. {dense[0]}); only factorised checkpoints "
            "export as a LoRA adapter. Re-extract it with a rank policy (e.g. --keep rank:16)."
        )
    arch, permute = gguf_architecture(architecture)
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, _ARCHS[architecture][0]), int(ckpt.base.get("num_layers") or 0))
    alpha = float(max(d.rank for d in ckpt.deltas.values()))
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(config, "num_key_value_heads", 0) or heads)
    if permute and not heads and any(n.endswith(("q_proj.weight", "k_proj.weight")) for n in ckpt.deltas):
        raise ExportError(f"Exporting {ckpt.name!r} needs the base model's attention head counts; load its base model.")
    tensors: dict[str, np.ndarray] = {}
    for name, delta in sorted(ckpt.deltas.items()):
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ExportError(f"Checkpoint {ckpt.name!r}: {name} has no llama.cpp tensor name for {arch}.")
        B = delta.B.float() * (delta.rank / alpha)
        if permute and name.endswith("q_proj.weight"):
            B = permute_rows(B, heads)
        elif permute and name.endswith("k_proj.weight"):
            B = permute_rows(B, kv_heads)
        tensors[f"{target}.lora_a"] = delta.A.float().contiguous().numpy()
        tensors[f"{target}.lora_b"] = B.contiguous().numpy()
    return tensors, alpha


def export_lora_gguf(ckpt: StanceCheckpoint, path: str | os.PathLike, config, overwrite: bool = False) -> Path:
    """Write a factorised weight stance as a llama.cpp LoRA adapter GGUF. ``config``:
    the base model's transformers config (head counts for the q/k permutation)."""
    import gguf

    architecture = str(ckpt.base.get("architecture", ""))
    tensors, alpha = lora_tensors(ckpt, architecture, config)
    arch, _ = gguf_architecture(architecture)

    def fill(writer) -> None:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(ckpt.name)
        for name, array in tensors.items():
            writer.add_tensor(name, array)

    return _write(Path(path), arch, fill, overwrite)


def export_control_vector(ckpt: StanceCheckpoint, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a steering stance as a llama.cpp control vector (its vectors at weight 1)."""
    if ckpt.kind != ACTIVATION:
        raise ExportError(f"{ckpt.name!r} is not a steering stance; it has no control vector.")
    vectors = {n: v for n, v in applied_vectors(ckpt).items() if bool(torch.any(v != 0))}
    if 0 in vectors:
        raise ExportError(
            f"{ckpt.name!r} steers layer 0, whose output llama.cpp control vectors cannot reach (they start at "
            "block 1). Rebuild it with a depth band that leaves out the first layer."
        )
    if not vectors:
        raise ExportError(f"{ckpt.name!r} adds no vector at any layer; there is nothing to export.")
    try:
        hint, _ = gguf_architecture(str(ckpt.base.get("architecture", "")))
    except ExportError:
        hint = str(ckpt.base.get("architecture", "unknown"))

    def fill(writer) -> None:
        writer.add_string("controlvector.model_hint", hint)
        writer.add_uint32("controlvector.layer_count", len(vectors))
        for layer, vector in sorted(vectors.items()):
            writer.add_tensor(f"direction.{layer}", vector.float().contiguous().numpy())

    return _write(Path(path), "controlvector", fill, overwrite)


def export_gguf(ckpt: StanceCheckpoint, path: str | os.PathLike, config=None, overwrite: bool = False) -> Path:
    """A steering stance as a control vector, a weight stance as a LoRA adapter."""
    if ckpt.kind == ACTIVATION:
        return export_control_vector(ckpt, path, overwrite)
    return export_lora_gguf(ckpt, path, config, overwrite)
