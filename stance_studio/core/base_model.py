"""The loaded base model: a causal LM, its tokenizer and its identity (model id,
architecture, depth, fingerprints of the weights as loaded).

Kept apart from :mod:`~stance_studio.core.models` (which loads models from files,
GGUF and the hub) so that what builds models in code, such as the tiny models of
:mod:`~stance_studio.core.tiny`, wraps them without importing the loaders.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch


@dataclass
class BaseModel:
    """A loaded causal LM with its tokenizer and identity.

    ``model_id`` is what checkpoints record and what the GUI shows; ``tensor_hashes``
    are fingerprints of the parameters as loaded (W0), taken before any blend.
    """

    model: torch.nn.Module
    tokenizer: object
    model_id: str
    source: str
    architecture: str
    num_layers: int
    tensor_hashes: dict[str, str] = field(default_factory=dict)
    load_seconds: float = 0.0
    from_cache: bool = False

    def __post_init__(self) -> None:
        if not self.tensor_hashes:
            self.tensor_hashes = tensor_hashes(self.model)

    @property
    def parameters(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.model.named_parameters())

    def fingerprint(self, names) -> str:
        """A fingerprint of the base tensors ``names`` (order does not matter)."""
        missing = [n for n in names if n not in self.tensor_hashes]
        if missing:
            raise KeyError(missing[0])
        h = hashlib.blake2b(digest_size=16)
        for name in sorted(names):
            h.update(name.encode())
            h.update(self.tensor_hashes[name].encode())
        return h.hexdigest()

    def describe(self) -> dict:
        """What a checkpoint records about the base (plus the fingerprint). The
        embedding hash tells models apart even where touched tensors are equal
        (norm scales are all ones in any fresh model)."""
        config = getattr(self.model, "config", None)
        hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 0
        return {"model": self.model_id, "architecture": self.architecture, "num_layers": self.num_layers,
                "hidden_size": int(hidden), "embedding": self._embedding_hash()}

    def _embedding_hash(self) -> str:
        try:
            weight = self.model.get_input_embeddings().weight
        except (AttributeError, NotImplementedError):
            return ""
        name = next((n for n, p in self.model.named_parameters() if p is weight), "")
        return self.tensor_hashes.get(name, "")

    @property
    def device(self) -> torch.device:
        """Where the model runs: inputs are created there."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of the weights (deltas stay float32 whatever it is)."""
        return next(self.model.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def parameter_bytes(self) -> int:
        """The weights' size in float32: what a ``budget`` policy is a fraction of and
        what checkpoint sizes are compared with, whatever the compute dtype."""
        return sum(p.numel() * 4 for p in self.model.parameters())


def tensor_hash(t: torch.Tensor) -> str:
    """A cheap, stable fingerprint of one tensor: shape, dtype and up to 65,536
    evenly strided values. It tells different models apart, not tampering."""
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // 65536)
    sample = flat[::step].to(torch.float32).contiguous().cpu()
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{tuple(t.shape)}|{t.dtype}".encode())
    h.update(sample.numpy().tobytes())
    return h.hexdigest()


def tensor_hashes(model: torch.nn.Module) -> dict[str, str]:
    return {name: tensor_hash(p) for name, p in model.named_parameters()}


def from_objects(model, tokenizer, model_id: str, source: str = "memory") -> BaseModel:
    """Wrap a built model and its tokenizer: eval mode, frozen, a pad token, and the
    fingerprints of its weights as they are now (W0)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config
    num_layers = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0) or 0)
    arch = (getattr(config, "architectures", None) or [type(model).__name__])[0]
    return BaseModel(model=model, tokenizer=tokenizer, model_id=model_id, source=source, architecture=arch, num_layers=num_layers)
