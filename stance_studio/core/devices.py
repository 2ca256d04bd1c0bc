"""Where a model runs and in which precision: ``--device auto|cpu|cuda|mps`` and
``--dtype auto|float32|bfloat16|float16``.

``auto`` picks CUDA (the launcher's ``LOCAL_RANK`` GPU under torchrun), then Apple's
MPS, then the CPU; and bfloat16 on a CUDA GPU that supports it, float32 elsewhere.
Whatever the compute precision, deltas are computed and stored in float32 (or the
extraction policy's dtype), so checkpoints move freely between devices and dtypes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from stance_studio.core.errors import DeviceError, OutOfMemoryError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)


@dataclass(frozen=True)
class Placement:
    """A resolved device and compute dtype."""

    device: torch.device
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def describe(self) -> str:
        return f"{self.device} ({self.dtype_name})"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The device ``spec`` names; ``auto`` = CUDA, then MPS, then CPU. A device that is
    not there is an error, not a silent fall back to the CPU."""
    text = str(spec or "auto").strip().lower()
    kind = text.split(":")[0]
    if kind not in DEVICES:
        raise DeviceError(f"Unknown device {spec!r}; choose one of {', '.join(DEVICES)} (e.g. cuda:1).")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {text}: no CUDA GPU is visible to this torch ({torch.__version__}); "
                              "use --device cpu, or install a CUDA build of torch on a machine with a GPU.")
        if ":" not in text and os.environ.get("LOCAL_RANK"):
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        device = torch.device(text)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
        return device
    if kind == "mps" and not _mps_available():
        raise DeviceError("--device mps: Apple's Metal backend is not available here; use --device cpu.")
    try:
        return torch.device(text)
    except RuntimeError as exc:
        raise DeviceError(f"Cannot read device {spec!r}: {exc}") from exc


def resolve_dtype(spec: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The compute dtype ``spec`` names; ``auto`` = bfloat16 on a CUDA GPU that supports
    it, float32 elsewhere."""
    if isinstance(spec, torch.dtype):
        return spec
    text = str(spec or "auto").strip().lower()
    text = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(text, text)
    if text == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if text not in DTYPES:
        raise DeviceError(f"Unknown dtype {spec!r}; choose one of {', '.join(DTYPE_CHOICES)}.")
    return DTYPES[text]


def resolve(device: str | None = "auto", dtype: str | None = "auto") -> Placement:
    resolved = resolve_device(device)
    return Placement(resolved, resolve_dtype(dtype, resolved))


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA, MPS and host out-of-memory errors (MPS raises a plain RuntimeError)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def out_of_memory(what: str, model_id: str, device, advice: str) -> OutOfMemoryError:
    """One clear error naming the model, the device and what to try."""
    text = f"Out of memory on {device} while {what} {model_id}: {advice}"
    if torch.device(device).type != "cpu":
        text += " Or use --dtype bfloat16, or --device cpu."
    return OutOfMemoryError(text)


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision for training: float32 master weights, ``dtype`` matrix products."""
    if dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)
