"""Export a factorised stance checkpoint as a PEFT LoRA adapter folder
(``adapter_config.json`` + ``adapter_model.safetensors``).

Each low-rank delta B @ A becomes one LoRA pair with ``lora_alpha == r`` (scaling
1), so ``PeftModel.from_pretrained`` reproduces the app's own apply exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from stance_studio.core.checkpoints import StanceCheckpoint
from stance_studio.core.deltas import LowRankDelta
from stance_studio.core.errors import CheckpointError

_PREFIX = "base_model.model."


def export_peft(ckpt: StanceCheckpoint, outdir: str | os.PathLike) -> Path:
    """Write ``ckpt`` as a PEFT adapter folder at ``outdir`` (atomically)."""
    dense = [name for name, d in ckpt.deltas.items() if not isinstance(d, LowRankDelta)]
    if dense:
        raise CheckpointError(
            f"Checkpoint {ckpt.name!r} holds {len(dense)} dense deltas (e.g. {dense[0]}); only factorised "
            "checkpoints (extraction policy rank:R or energy:F without dense modules, or LoRA training) "
            "export to PEFT. Re-extract it with a rank policy."
        )
    tensors = {}
    ranks: dict[str, int] = {}
    for name, delta in ckpt.deltas.items():
        if not name.endswith(".weight"):
            raise CheckpointError(f"Checkpoint {ckpt.name!r}: {name} is not a weight matrix; PEFT cannot hold it.")
        module = name[: -len(".weight")]
        tensors[f"{_PREFIX}{module}.lora_A.weight"] = delta.A.float().contiguous()
        tensors[f"{_PREFIX}{module}.lora_B.weight"] = delta.B.float().contiguous()
        ranks[module] = delta.rank
    top = max(ranks.values())
    config = {
        "alpha_pattern": {m: r for m, r in sorted(ranks.items()) if r != top},
        "base_model_name_or_path": ckpt.base.get("model"),
        "bias": "none",
        "fan_in_fan_out": False,
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
    outdir = Path(outdir)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-peft-", dir=outdir.parent))
    try:
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        if outdir.exists():
            if not (outdir / "adapter_config.json").exists() and any(outdir.iterdir()):
                raise CheckpointError(f"{outdir} exists and is not an adapter folder; choose an empty or new folder.")
            shutil.rmtree(outdir)
        os.replace(tmp, outdir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return outdir
