"""Training on several processes under ``torchrun`` or ``accelerate launch``.

The launcher sets ``WORLD_SIZE``/``RANK``; :func:`current` then gives a
:class:`DistributedRun` built on accelerate (DDP, or FSDP full-shard with
``fsdp=True`` or an accelerate FSDP config), else ``None`` and training runs as one
process. Every rank draws the same global batches from the same seed and trains on
its slice of each; the loss is scaled so that the averaged gradients equal those of
one process on the whole batch. A cancel on any rank stops them all at the next step.
Only rank 0 extracts, measures and writes (:func:`is_main`).
"""

from __future__ import annotations

import atexit
import os
from contextlib import contextmanager, nullcontext
from typing import Iterator, Optional, Sequence

import torch

from stance_studio.core.errors import Cancelled, StanceStudioError


def world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    """Whether this process is the one that extracts, measures and writes (rank 0)."""
    return rank() == 0


def wants_fsdp() -> bool:
    """FSDP chosen through accelerate's config (``accelerate launch`` with an FSDP config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")


class DistributedRun:
    """One rank of a multi-process training run (an accelerate ``Accelerator`` inside)."""

    def __init__(self, device: Optional[torch.device] = None, fsdp: bool = False) -> None:
        from accelerate import Accelerator

        self.fsdp = fsdp or wants_fsdp()
        plugin = None
        if self.fsdp:
            from accelerate import FullyShardedDataParallelPlugin

            plugin = FullyShardedDataParallelPlugin(sharding_strategy="FULL_SHARD", use_orig_params=True,
                                                    state_dict_type="FULL_STATE_DICT")
        cpu = device is not None and torch.device(device).type == "cpu"
        self.accelerator = Accelerator(cpu=cpu, fsdp_plugin=plugin)
        self.rank = self.accelerator.process_index
        self.size = self.accelerator.num_processes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Wrap ``model`` for DDP or FSDP; build the optimiser afterwards, on its parameters."""
        return self.accelerator.prepare_model(model)

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model)

    def shard(self, batch: Sequence[int], batch_size: int) -> list[int]:
        """This rank's slice of a global batch (every rank holds at least one example)."""
        if len(batch) < self.size:
            raise StanceStudioError(
                f"A batch of {len(batch)} examples cannot be split over {self.size} processes; use --batch-size "
                f"of at least {self.size} (and a dataset that large), or fewer processes."
            )
        return list(batch[self.rank :: self.size])

    def stop_requested(self, local: bool) -> bool:
        """Whether any rank wants to stop (one tiny all-reduce, so all ranks agree)."""
        flag = torch.tensor([1.0 if local else 0.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def check_cancel(self, cancel, what: str) -> None:
        if self.stop_requested(cancel.is_set()):
            raise Cancelled(f"The {what} was cancelled (on rank {self.rank} or another); nothing was saved.")

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        total = value.detach().float().reshape(1).clone().to(self.device)
        torch.distributed.all_reduce(total)
        return total

    def clip_grad_norm(self, model, params, max_norm: float) -> torch.Tensor:
        return self.accelerator.clip_grad_norm_(params, max_norm)

    @contextmanager
    def full_parameters(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The unwrapped model with every parameter whole (FSDP gathers its shards)."""
        if self.fsdp:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            context = FSDP.summon_full_params(model, writeback=False)
        else:
            context = nullcontext()
        with context:
            yield self.unwrap(model)

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()


_RUN: Optional[DistributedRun] = None


def current(device: Optional[torch.device] = None, fsdp: bool = False) -> Optional[DistributedRun]:
    """The run of this process when a launcher started several, else ``None``."""
    global _RUN
    if world_size() <= 1:
        return None
    if _RUN is None:
        _RUN = DistributedRun(device=device, fsdp=fsdp)
        # A process that exits with the group still joined (a cancel, an error, a script
        # that never calls finish) can abort in gloo's teardown; leave it on the way out.
        atexit.register(finish)
    return _RUN


def finish() -> None:
    """Leave the process group (after this rank's last collective), if one was joined."""
    global _RUN
    if _RUN is not None and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _RUN = None


def causal_lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled tokens (the mean loss × their count)."""
    shift_logits = logits[:, :-1, :].float().reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    return torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")


def labelled_tokens(labels: torch.Tensor) -> int:
    """How many tokens a batch's loss averages over (the shifted, unmasked labels)."""
    return int((labels[:, 1:] != -100).sum())
