"""Fine-tuning a stance into a copy of the base model: full, selective or LoRA.

Every method ends in the same thing, a per-parameter delta (tuned − base): dense
for ``full`` and ``selective``, the exact low-rank product for ``lora``. The base
model itself is never modified: training runs on a copy of the true base weights
(:func:`~stance_studio.core.runtime.base_copy`), whatever blend is shown.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from stance_studio.core import devices, distributed
from stance_studio.core.datasets import StanceDataset, collate
from stance_studio.core.deltas import Delta, LowRankDelta, dense_deltas, is_finite
from stance_studio.core.errors import StanceStudioError, TrainingDivergedError
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, TrainStep, ensure_flag, no_progress
from stance_studio.core.modules import is_transposed_linear, select_linear_modules, select_parameters
from stance_studio.core.runtime import base_copy, base_tensor

METHODS = ("full", "selective", "lora")
DEFAULT_LR = {"full": 5e-5, "selective": 1e-4, "lora": 1e-3}
DEFAULT_MODULES = {"full": [], "selective": ["q_proj", "v_proj"], "lora": ["q_proj", "v_proj"]}
MAX_STEPS = 1_000_000  # a run this long is a typo; beyond it the run would never end
SEED_RANGE = (-2**63, 2**64 - 1)  # what torch's generators accept


def check_seed(seed: int, what: str = "The seed") -> int:
    """``seed`` when torch's generators can take it, else an error naming it."""
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise StanceStudioError(f"{what} must be a whole number from -2^63 to 2^64-1 (got {seed}).")
    return seed


@dataclass
class TrainConfig:
    """How to train one stance. Defaults shift the bundled model's stance visibly in
    about a minute on two CPU cores (DESIGN.md's measurements)."""

    method: str = "full"  # full | selective | lora
    modules: list[str] = field(default_factory=list)  # patterns; empty = the method's default
    steps: int = 20  # optimiser steps
    lr: Optional[float] = None  # None = DEFAULT_LR[method]
    rank: int = 8  # LoRA rank
    lora_alpha: Optional[float] = None  # None = 2 × rank
    seed: int = 0
    grad_clip: float = 1.0  # max gradient norm; 0 = no clipping
    batch_size: int = 4  # examples per step
    weight_decay: float = 0.0
    max_consecutive_nonfinite: int = 3  # skipped steps in a row before the run stops
    threads: Optional[int] = None  # torch threads for the run (None = leave as is)
    fsdp: bool = False  # under torchrun/accelerate: shard the model (FSDP full-shard) instead of DDP
    holdout: float = 0.25  # share of the dataset kept out of training (seeded; ≥ 2 examples; 0 = none)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise StanceStudioError(f"Unknown training method {self.method!r}; choose one of {', '.join(METHODS)}.")
        for name in ("steps", "rank", "batch_size", "max_consecutive_nonfinite"):
            if getattr(self, name) < 1:
                raise StanceStudioError(f"{name.replace('_', ' ')} must be at least 1 (got {getattr(self, name)}).")
        if self.steps > MAX_STEPS:
            raise StanceStudioError(f"steps must be at most {MAX_STEPS:,} (got {self.steps}).")
        check_seed(self.seed)
        if not self.grad_clip >= 0:
            raise StanceStudioError(f"The gradient clip must be 0 (off) or a positive norm (got {self.grad_clip}).")
        if not (isinstance(self.holdout, (int, float)) and 0 <= self.holdout < 1):
            raise StanceStudioError(f"The held-out fraction must be at least 0 and below 1 (got {self.holdout}).")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise StanceStudioError(f"The learning rate must be a positive number (got {self.lr}).")

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    @property
    def effective_modules(self) -> list[str]:
        return list(self.modules) or list(DEFAULT_MODULES[self.method])

    def as_json(self) -> dict:
        out = asdict(self)
        out.update(lr=self.effective_lr, modules=self.effective_modules)
        if self.method == "lora":
            out["lora_alpha"] = self.lora_alpha or 2 * self.rank
        return out


@dataclass
class TrainResult:
    deltas: dict[str, Delta]
    losses: list[Optional[float]]  # per step; None where the step was skipped
    grad_norms: list[Optional[float]]
    nonfinite_steps: int
    steps: int
    seconds: float
    trainable_params: int
    config: TrainConfig
    parallel: Optional[dict] = None  # {"processes", "strategy"} when several processes trained
    # With ``train(keep_model=True)`` in one process: the tuned copy itself (eval mode,
    # frozen, in the base's dtype), so measuring runs it as plain weights instead of
    # adding every dense delta at runtime. None otherwise.
    model: Optional[torch.nn.Module] = field(default=None, repr=False)

    @property
    def final_loss(self) -> Optional[float]:
        finite = [x for x in self.losses if x is not None]
        return finite[-1] if finite else None


def train(
    base,
    dataset: StanceDataset,
    config: TrainConfig = TrainConfig(),
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    keep_model: bool = False,
) -> TrainResult:
    """Train ``dataset`` into a copy of ``base``'s base weights (no stance); return the delta
    (and, with ``keep_model``, the tuned copy: see :attr:`TrainResult.model`)."""
    cancel = ensure_flag(cancel)
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(base, dataset, config, progress, cancel, keep_model)
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        if not devices.is_out_of_memory(exc):
            raise
        raise devices.out_of_memory(
            f"training with method {config.method!r} and batch size {config.batch_size} on", base.model_id,
            base.device, "lower the batch size, train fewer modules (selective or LoRA), or use a smaller model.",
        ) from exc
    finally:
        torch.set_num_threads(old_threads)


def _train(base, dataset, config: TrainConfig, progress, cancel, keep_model: bool = False) -> TrainResult:
    progress(Progress("train", 0, config.steps, "Preparing a copy of the model"))
    torch.manual_seed(config.seed)
    model = base_copy(base.model)  # the true base, whatever blend is shown
    compute_dtype = base.dtype
    if compute_dtype != torch.float32:
        # float32 master weights, matrix products in the compute dtype (mixed precision):
        # a bf16 weight would round away most AdamW steps, and the delta is float32 anyway
        model.float()
    for p in model.parameters():
        p.requires_grad_(False)
    if config.method == "lora":
        model, trainable = _wrap_lora(model, base, config)
    else:
        names = [n for n, _ in model.named_parameters()] if config.method == "full" else select_parameters(
            model, config.effective_modules, base.num_layers
        )
        params = dict(model.named_parameters())
        trainable = [params[n] for n in names]
        for p in trainable:
            p.requires_grad_(True)
    run = distributed.current(fsdp=config.fsdp, device=_device_of(base.model))
    if run is not None:
        model = run.prepare(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=config.effective_lr, weight_decay=config.weight_decay)
    model.train()
    order = torch.Generator().manual_seed(config.seed)
    examples = dataset.examples
    queue: list[int] = []
    losses: list[Optional[float]] = []
    norms: list[Optional[float]] = []
    skipped = consecutive = 0
    started = time.perf_counter()
    for step in range(1, config.steps + 1):
        if run is None:
            _between_steps(cancel, model)
            cancel.raise_if_set("training")
        else:
            run.check_cancel(cancel, "training")
        batch_idx = []
        while len(batch_idx) < min(config.batch_size, len(examples)):
            if not queue:
                queue = torch.randperm(len(examples), generator=order).tolist()
            batch_idx.append(queue.pop())
        with devices.autocast(_device_of(model), compute_dtype):
            if run is None:
                batch = _on(collate(base.tokenizer, [examples[i] for i in batch_idx]), model)
                loss = model(**batch).loss
            else:
                loss = _shard_loss(run, model, base.tokenizer, [examples[i] for i in batch_idx], config.batch_size)
        if run is None:
            _between_steps(cancel, model)  # also mid-step: a step on a large model takes seconds
        grad_norm = None
        ok = bool(torch.isfinite(loss))
        if run is not None:
            ok = not run.stop_requested(not ok)  # every rank skips the step if any loss is not finite
        if ok:
            loss.backward()
            clip = config.grad_clip or math.inf
            norm = torch.nn.utils.clip_grad_norm_(trainable, clip) if run is None else run.clip_grad_norm(
                model, trainable, clip)
            grad_norm = float(norm)
            ok = math.isfinite(grad_norm)
        if run is not None:
            loss = run.sum(loss) / run.size  # the global batch's mean loss, as one process reports it
        if ok:
            optimiser.step()
            consecutive = 0
        else:
            skipped += 1
            consecutive += 1
        optimiser.zero_grad(set_to_none=True)
        loss_value = float(loss.detach())
        losses.append(loss_value if ok else None)
        norms.append(grad_norm if ok else None)
        elapsed = time.perf_counter() - started
        progress(Progress(
            "train", step, config.steps,
            f"Step {step}/{config.steps}" + (" skipped: non-finite loss or gradient" if not ok else f" loss {loss_value:.4f}"),
            info={"loss": loss_value if ok else None, "grad_norm": grad_norm if ok else None,
                  "seconds": elapsed, "skipped": not ok, "nonfinite_steps": skipped},
            partial=TrainStep(step, loss_value if ok else None, grad_norm if ok else None, elapsed, skipped),
        ))
        if consecutive >= config.max_consecutive_nonfinite:
            raise TrainingDivergedError(
                f"Training diverged: {consecutive} steps in a row had a non-finite loss or gradient "
                f"(step {step} of {config.steps}, lr {config.effective_lr:g}). Lower the learning rate "
                "or the gradient clip, or train more parameters; nothing was saved."
            )
    model.eval()
    with (run.full_parameters(model) if run is not None else nullcontext(model)) as whole:
        if config.method == "lora":
            deltas = _lora_deltas(whole, base)
        else:
            # The base is the copy's starting point and is never touched, so it serves
            # as W0 without holding a second copy of the weights in memory.
            tuned = dict(whole.named_parameters())
            deltas = dense_deltas({n: base_tensor(base.model, n) for n in names},
                                  {n: tuned[n].detach() for n in names})
    bad = [n for n, d in deltas.items() if not is_finite(d)]
    if bad:
        raise TrainingDivergedError(f"Training produced non-finite weights in {bad[0]}; nothing was saved.")
    seconds = time.perf_counter() - started
    return TrainResult(
        deltas=deltas,
        losses=losses,
        grad_norms=norms,
        nonfinite_steps=skipped,
        steps=config.steps,
        seconds=seconds,
        trainable_params=sum(p.numel() for p in trainable),
        config=config,
        parallel=None if run is None else {"processes": run.size, "strategy": "fsdp" if run.fsdp else "ddp"},
        model=_tuned_model(model, config, compute_dtype) if keep_model and run is None else None,
    )


@torch.no_grad()
def _tuned_model(model, config: TrainConfig, dtype: torch.dtype) -> torch.nn.Module:
    """The trained copy as a plain frozen model in the base's dtype (LoRA merged in)."""
    if config.method == "lora":
        model = model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(dtype).eval()


def _between_steps(cancel: CancelFlag, model: torch.nn.Module) -> None:
    """Let the caller use the loaded model between two steps, and between a step's
    forward and backward pass (the GUI answers a generation there). Safe because this
    run trains a copy (its graph holds only the copy's tensors); its random state is
    set aside meanwhile, so the run's result is the same whether or not anything ran."""
    if cancel.between_steps_hook is None:
        return
    device = _device_of(model)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        cancel.between_steps()


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _on(batch: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The batch's tensors on the device the model runs on."""
    device = _device_of(model)
    return {k: v.to(device) for k, v in batch.items()}


def _shard_loss(run, model, tokenizer, examples, batch_size: int) -> torch.Tensor:
    """This rank's share of the global batch's mean loss, scaled so that DDP's average
    of the ranks' gradients is the gradient of that mean: Σ_rank token losses / N × ranks."""
    total = distributed.labelled_tokens(collate(tokenizer, examples)["labels"])
    mine = run.shard(list(range(len(examples))), batch_size)
    batch = _on(collate(tokenizer, [examples[i] for i in mine]), model)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return distributed.causal_lm_loss_sum(logits, batch["labels"]) * run.size / max(total, 1)


def _wrap_lora(model, base, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    targets = select_linear_modules(model, config.effective_modules, base.num_layers)
    transposed = [is_transposed_linear(model.get_submodule(t)) for t in targets]
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.lora_alpha or 2 * config.rank,
        target_modules=targets,
        lora_dropout=0.0,
        bias="none",
        # GPT-2's Conv1D stores its weight (in × out): PEFT transposes its pairs there
        fan_in_fan_out=all(transposed),
    )
    with warnings.catch_warnings():
        # peft reads a property transformers deprecated: two lines on every run's stderr
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if any(transposed) and not all(transposed):
            # PEFT sets fan_in_fan_out per module and says so; a mix of both kinds is fine
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        wrapped = get_peft_model(model, lora)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    return wrapped, trainable


_PEFT_PREFIX = "base_model.model."


def _lora_deltas(wrapped, base) -> dict[str, Delta]:
    """Each LoRA pair as its exact delta B·scaling @ A on the base weight's name."""
    from peft.tuners.lora import LoraLayer

    deltas: dict[str, Delta] = {}
    for name, module in wrapped.named_modules():
        if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
            continue
        A = module.lora_A["default"].weight.detach().float().clone()
        B = module.lora_B["default"].weight.detach().float() * float(module.scaling["default"])
        if getattr(module, "fan_in_fan_out", False):
            # the weight is (in × out), so its change is (B @ A)ᵀ = Aᵀ @ Bᵀ
            A, B = B.T, A.T
        key = (name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name) + ".weight"
        if key not in base.tensor_hashes:
            raise StanceStudioError(f"LoRA module {name} does not map onto a base parameter ({key}).")
        if torch.count_nonzero(B) == 0:
            continue
        deltas[key] = LowRankDelta(A=A.contiguous(), B=B.contiguous())
    return deltas
