"""Export the base with a stance or blend merged into its weights, as a plain
transformers model folder (safetensors weights, config, tokenizer) that
``AutoModelForCausalLM.from_pretrained`` loads in any other tool.

The merge goes through the :class:`~stance_studio.core.blend.Blender`, so the
folder holds exactly W0 + Σ α Δ, and the blend in force before the export is put
back afterwards. The folder is written beside its destination and renamed into
place; a destination that holds anything but a previous export is refused, so no
user file is ever deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import StanceCheckpoint
from stance_studio.core.errors import ExportError

MARKER = "stance-studio-export.json"


def check_destination(outdir: Path, marker: str = MARKER) -> None:
    """Refuse a destination that exists and is not empty, unless it is an earlier
    export of ours holding only the files that export wrote."""
    if not outdir.exists():
        return
    if not outdir.is_dir():
        raise ExportError(f"{outdir} exists and is not a folder; choose a new or empty folder.")
    present = {p.name for p in outdir.iterdir()}
    if not present:
        return
    try:
        ours = set(json.loads((outdir / marker).read_text()).get("files", [])) | {marker}
    except (OSError, ValueError, AttributeError):
        ours = set()
    if not ours or not present <= ours:
        extra = sorted(present - ours)
        raise ExportError(
            f"{outdir} is not empty and is not an earlier export ({extra[0]} is not ours); "
            "choose a new or empty folder, nothing was written."
        )


def replace_folder(tmp: Path, outdir: Path, marker: str = MARKER) -> None:
    """Move the finished ``tmp`` folder to ``outdir`` (checked again just before)."""
    check_destination(outdir, marker)
    if outdir.exists():
        shutil.rmtree(outdir)
    os.replace(tmp, outdir)


def _refuse_activation_terms(blend: Sequence[tuple[object, float]]) -> None:
    for src, alpha in blend:
        if alpha and isinstance(src, StanceCheckpoint) and getattr(src, "kind", "weights") != "weights":
            raise ExportError(
                f"{src.name!r} is an activation-steering stance: it adds vectors to hidden states and cannot "
                "be merged into a model's weights. Export it with `export-gguf` as a llama.cpp control vector."
            )


@torch.no_grad()
def merged_state_dict(model, blend, original) -> dict[str, torch.Tensor]:
    """The model's state dict with W0 + Σ α Δ for every parameter the blend touches
    (tied names share the merged tensor); ``original(name)`` gives W0. The live
    model is not changed: stances run at runtime and W0 stays in the parameters."""
    state = dict(model.state_dict())
    by_storage: dict[int, list[str]] = {}
    for key, tensor in state.items():
        by_storage.setdefault(tensor.data_ptr(), []).append(key)
    params = dict(model.named_parameters())
    terms: dict[str, list] = {}
    for src, alpha in blend:
        for name, delta in getattr(src, "deltas", src).items():
            terms.setdefault(name, []).append((float(alpha), delta))
    for name, parts in terms.items():
        w0 = original(name)
        merged = w0.float().clone()
        for alpha, delta in parts:
            merged += alpha * delta.materialize().to(merged.device)
        for key in by_storage.get(params[name].data_ptr(), [name]):
            state[key] = merged.to(w0.dtype)
    return state


def export_model(base, blend: Sequence[tuple[object, float]], outdir: str | os.PathLike,
                 blender: Blender | None = None, allow_mismatch: bool = False, spec: str = "") -> Path:
    """Write ``base`` with ``blend`` ((checkpoint, alpha) pairs) merged in to ``outdir``."""
    outdir = Path(outdir)
    _refuse_activation_terms(blend)
    check_destination(outdir)
    blender = blender or Blender(base)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=outdir.parent))
    model = base.model
    try:
        for src, _ in blend:
            blender.check(src, allow_mismatch=allow_mismatch)
        state = merged_state_dict(model, blend, blender.original)
        quantizer = getattr(model, "hf_quantizer", None)
        flagged = getattr(model, "is_quantized", False)
        # transformers flags a GGUF-loaded model as quantized and refuses to save it;
        # the weights here are plain float tensors, so save with the flag lowered.
        model.hf_quantizer, model.is_quantized = None, False
        try:
            model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        finally:
            model.hf_quantizer, model.is_quantized = quantizer, flagged
        base.tokenizer.save_pretrained(tmp)
        files = sorted(p.name for p in tmp.iterdir())
        record = {
            "files": files,
            "base": base.model_id,
            "variant": spec or ",".join(f"{getattr(s, 'name', '?')}={a:g}" for s, a in blend) or "base",
            "stances": [{"name": getattr(s, "name", "?"), "alpha": a} for s, a in blend],
        }
        (tmp / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        replace_folder(tmp, outdir)
    except OSError as exc:
        raise ExportError(f"Could not write the model folder {outdir}: {exc.strerror or exc}.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return outdir
