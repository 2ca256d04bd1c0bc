"""The LoRA GGUF export lays tensors out as llama.cpp does: an adapter whose B factor
is a base weight itself (A = identity) exports B under the same name and in the same
row order as the bundled model's own GGUF file holds that weight."""

import numpy as np
import pytest
import torch

from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.deltas import LowRankDelta
from stance_studio.core.gguf_export import lora_tensors
from stance_studio.core.models import bundled_gguf_path

pytestmark = pytest.mark.slow


def test_lora_factors_use_llama_cpps_names_and_rotary_row_order(bundled):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    params = bundled.parameters
    names = [f"model.layers.{n}.self_attn.{kind}.weight" for n in (0, 17) for kind in ("q_proj", "k_proj", "v_proj")]
    deltas = {}
    for name in names:
        weight = params[name].detach().float()
        deltas[name] = LowRankDelta(A=torch.eye(weight.shape[1]), B=weight.clone())
    ckpt = make_checkpoint("identity", deltas, bundled)
    tensors, alpha = lora_tensors(ckpt, bundled.architecture, bundled.model.config)
    assert alpha == 576.0
    reader = GGUFReader(str(bundled_gguf_path()))
    original = {t.name: t for t in reader.tensors}
    for n in (0, 17):
        for kind in ("attn_q", "attn_k", "attn_v"):
            raw = original[f"blk.{n}.{kind}.weight"]
            ours = tensors[f"blk.{n}.{kind}.weight.lora_b"]
            theirs = dequantize(raw.data, raw.tensor_type).reshape(ours.shape)
            assert np.array_equal(ours, theirs.astype(np.float32)), f"blk.{n}.{kind}"
