"""The base model's log-likelihood of reference responses, computed once per model.

Stance fit compares a variant's log-likelihood of a stance's reference responses with
the base's (:mod:`~stance_studio.core.stance_fit`). The base's half depends only on
the base weights, the precision, the device and the tokens of each example, so it is
kept per example: in memory for the process and on disk in the cache folder
(``base-logliks/<model key>.json``), and a later training run, evaluation or
comparison on the same examples computes only the variant's half.

An entry is keyed by a fingerprint of every base tensor, the compute dtype and device
type, and the example's token ids and labels: another model, precision or tokenizer,
or an edited example, never reads a stale value.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Optional, Sequence

from stance_studio.core.datasets import Example, encode_example
from stance_studio.core.jobs import CancelFlag
from stance_studio.core.paths import cache_dir
from stance_studio.core.stance_fit import response_logliks

Loglik = tuple[float, int]  # (summed log-likelihood of the response, its token count)

_LOCK = threading.Lock()
_MEMORY: dict[str, dict[str, Loglik]] = {}  # model key → example key → value


def model_key(base) -> str:
    """What the base's log-likelihoods depend on besides the example."""
    h = hashlib.blake2b(digest_size=12)
    h.update(base.fingerprint(base.tensor_hashes.keys()).encode())
    h.update(f"|{base.dtype}|{base.device.type}".encode())
    return h.hexdigest()


def example_key(tokenizer, example: Example) -> str:
    ids, labels = encode_example(tokenizer, example)
    return hashlib.blake2b(json.dumps([ids, labels]).encode(), digest_size=16).hexdigest()


def _file(key: str) -> Path:
    return cache_dir() / "base-logliks" / f"{key}.json"


def _read(key: str) -> dict[str, Loglik]:
    try:
        raw = json.loads(_file(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Loglik] = {}
    for k, v in raw.items():
        if (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (int, float)) and isinstance(v[1], int)
                and not isinstance(v[1], bool)):
            out[k] = (float(v[0]), int(v[1]))
    return out


def _write(key: str, entries: dict[str, Loglik]) -> None:
    path = _file(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({k: list(v) for k, v in entries.items()}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full cache only costs a recomputation next time


def base_logliks(base, blender, examples: Sequence[Example], cancel: Optional[CancelFlag] = None,
                 use_cache: bool = True) -> list[Loglik]:
    """The base's (summed log-likelihood, token count) of each example's response,
    computed only for examples not cached yet (with no stance, per call: the blend
    the model shows is left as it is)."""
    keys = [example_key(base.tokenizer, ex) for ex in examples]
    mkey = model_key(base)
    with _LOCK:
        known = _MEMORY.setdefault(mkey, {}) if use_cache else {}
        if use_cache and not all(k in known for k in keys):
            for k, v in _read(mkey).items():
                known.setdefault(k, v)
        missing = [i for i, k in enumerate(keys) if k not in known]
    if missing:
        todo = [examples[i] for i in missing]
        with blender.runtime.scoped([]):
            values = response_logliks(base, todo, cancel=cancel, share_prefix=True)
        computed = {keys[i]: v for i, v in zip(missing, values)}
        if not use_cache:
            return [computed[k] for k in keys]
        with _LOCK:
            known.update(computed)
            _write(mkey, dict(known))
    return [known[k] for k in keys]


def clear_memory() -> None:
    """Forget what this process holds (the disk cache stays)."""
    with _LOCK:
        _MEMORY.clear()
