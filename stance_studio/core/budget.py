"""``budget:F``: spend a byte budget on the representations that keep the most.

Every 2-D delta gets a curve of (bytes, error) choices: its singular directions,
each kept in float or quantized at one of the policy's widths (``q8``, ``q4``, or
8/4/2 bits for ``mixed``), plus a sign-and-scale (``sign``) or DARE-sparsified
(``dare:P``) copy of the whole matrix when the policy names them. The error is the
squared error left in the module's weights (with ``aware``: in its outputs, input
channels weighted by their RMS on calibration text). Each module's choices are cut
to their lower convex hull, and the hull steps of all modules are taken greedily by
error removed per byte while they fit: the whole file, headers included, stays
within the budget. 1-D deltas (norm scales) are kept dense first, most changed
first, while they fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from stance_studio.core.deltas import Delta, LowRankDelta
from stance_studio.core.jobs import Progress
from stance_studio.core.packing import pack_dense, pack_lowrank, pack_sparse, quantize_rows, dequantize_rows, unpack
from stance_studio.core.deltas import factors_from_svd as from_svd
from stance_studio.core.deltas import svd_factors as factors

FLOAT = 0  # a direction kept in the policy's float dtype
SCALE_BYTES = 4  # scales are stored in float32
NEGLIGIBLE = 1e-7  # a step removing less than this share of its module's squared change is never bought


def widths_for(quant: Optional[str]) -> tuple[int, ...]:
    """The widths a direction may take under a policy's factor precision."""
    return {None: (FLOAT,), "q8": (8,), "q4": (4,), "mixed": (8, 4, 2)}[quant]


def module_header_bytes(name: str, tensors: int = 2, packed: bool = False) -> int:
    """An upper bound of what one kept module adds to a checkpoint's header: its
    safetensors entries, its name in the extraction record twice and, for a packed
    delta, its description."""
    return tensors * (len(name) + 80) + 2 * (len(name) + 12) + ((len(name) + 128) if packed else 0)


def direction_errors(U, s, Vh, bits: int, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """Squared error of each rank-1 term s_k u_k v_k^T when its factors are quantized at ``bits``."""
    root = s.sqrt()
    b, a = (U * root).T, root[:, None] * Vh  # rows: one direction each
    bq = dequantize_rows(*quantize_rows(b, bits), bits)
    aq = dequantize_rows(*quantize_rows(a, bits), bits)
    if weight is not None:
        a, aq = a * weight, aq * weight
    bb, bqbq, bbq = (b * b).sum(1), (bq * bq).sum(1), (b * bq).sum(1)
    aa, aqaq, aaq = (a * a).sum(1), (aq * aq).sum(1), (a * aq).sum(1)
    return (bb * aa + bqbq * aqaq - 2 * bbq * aaq).clamp_min(0).double()


@dataclass
class Choice:
    """One point of a module's curve: its bytes, error left, and how to build it."""

    bytes: float
    error: float
    kind: str  # "none" | "lowrank" | "sign" | "dare"
    steps: int = 0  # lowrank: how many of the module's direction steps are applied


def lower_hull(points: list[tuple[float, float]], start: tuple[float, float]) -> list[int]:
    """Indices of ``points`` (bytes, error) on the lower convex hull that starts at
    ``start``, in order of bytes; each step removes less error per byte than the last."""
    out: list[int] = []
    for i in sorted(range(len(points)), key=lambda i: points[i]):
        cost, err = points[i]
        if err >= (points[out[-1]][1] if out else start[1]):
            continue
        while out:
            a = points[out[-2]] if len(out) > 1 else start
            b = points[out[-1]]
            if (a[1] - err) / max(cost - a[0], 1e-12) >= (a[1] - b[1]) / max(b[0] - a[0], 1e-12):
                out.pop()
            else:
                break
        out.append(i)
    return out


def lowrank_curve(name, delta, svd, widths, item_bytes, rank_cap, weight, total: float):
    """The low-rank choices of one module (best error per byte first) and the
    direction steps (direction, width) they apply, in order."""
    U, s, Vh = svd
    out_dim, in_dim = delta.shape
    cap = min(s.numel(), rank_cap or s.numel())
    if widths == (FLOAT,):
        cap = min(cap, (out_dim * in_dim) // (out_dim + in_dim))
    U, s, Vh = U[:, :cap], s[:cap], Vh[:cap]
    energy = s.double() ** 2
    options = []  # per width: (width, bytes per direction, error per direction)
    for w in widths:
        if w == FLOAT:
            options.append((w, float((out_dim + in_dim) * item_bytes), torch.zeros_like(energy)))
        else:
            options.append((w, (out_dim + in_dim) * w / 8 + 2 * SCALE_BYTES, direction_errors(U, s, Vh, w, weight)))
    steps = []  # (error removed per byte, direction, width, extra bytes, error removed)
    for k in range(cap):
        pts = [(cost, float(err[k])) for _, cost, err in options]
        prev = (0.0, float(energy[k]))
        for i in lower_hull(pts, prev):
            cost, err = pts[i]
            if prev[1] - err <= NEGLIGIBLE * total:
                break  # numerically nothing: not worth a byte
            steps.append(((prev[1] - err) / (cost - prev[0]), k, options[i][0], cost - prev[0], prev[1] - err))
            prev = (cost, err)
    steps.sort(key=lambda t: -t[0])
    packed = widths != (FLOAT,)
    spent, curve, left, used = 0.0, [], total, set()
    for i, (_, _, w, cost, gain) in enumerate(steps, start=1):
        spent += cost
        left -= gain
        used.add(w)  # each width in use is one segment: four tensors in the file
        header = module_header_bytes(name, 4 * len(used) if packed else 2, packed)
        curve.append(Choice(spent + header, left, "lowrank", i))
    return curve, [(k, w) for _, k, w, _, _ in steps]


def hull(points: list[Choice], total: float) -> list[Choice]:
    """The lower convex hull of a module's choices, starting from keeping nothing."""
    start = Choice(0.0, total, "none")
    return [start] + [points[i] for i in lower_hull([(p.bytes, p.error) for p in points], (0.0, total))]


def spend_budget(deltas: Mapping[str, Delta], policy, budget_bytes: float, item_bytes: int, progress, cancel,
                 scales: Mapping[str, torch.Tensor], seed: int = 0, cache: Optional[dict] = None) -> dict[str, Delta]:
    """The kept deltas within ``budget_bytes`` (see the module docstring). ``cache``:
    a dict that keeps each module's SVD for the next extraction of the same deltas."""
    cache = {} if cache is None else cache
    kept: dict[str, Delta] = {}
    remaining = float(budget_bytes)
    flat = sorted((-float(d.materialize().double().square().sum()), n) for n, d in deltas.items() if len(d.shape) != 2)
    for _, name in flat:
        cost = deltas[name].materialize().numel() * item_bytes + module_header_bytes(name)
        if cost <= remaining:
            kept[name] = deltas[name]
            remaining -= cost
    widths = widths_for(policy.quant)
    hulls = {}
    matrices = [n for n, d in deltas.items() if len(d.shape) == 2]
    for i, name in enumerate(matrices):
        cancel.raise_if_set("extraction")
        delta, weight = deltas[name], scales.get(name)
        key = (name, id(delta), weight is not None)
        svd = cache[key] if key in cache else cache.setdefault(key, factors(delta, weight))
        matrix = delta.materialize()
        weighted = matrix if weight is None else matrix * weight
        total = float(weighted.double().square().sum())
        curve, steps = lowrank_curve(name, delta, svd, widths, item_bytes, policy.rank, weight, total)
        points = list(curve)
        if policy.sign:
            packed = unpack(**_spec(pack_dense(matrix, 1)))
            err = float(((packed.materialize() - matrix) * (1 if weight is None else weight)).double().square().sum())
            points.append(Choice(packed.nbytes + module_header_bytes(name, 2, True), err, "sign"))
        if policy.dare is not None:
            p = policy.dare
            size = round(matrix.numel() * (1 - p)) * item_bytes + -(-matrix.numel() // 8)
            err = float(weighted.double().square().sum()) * p / (1 - p)
            points.append(Choice(size + module_header_bytes(name, 2, True), err, "dare"))
        hulls[name] = (hull(points, total), svd, steps)
        progress(Progress("extract", i + 1, len(matrices), f"Analysing {name}"))
    candidates = []
    for name, (points, _, _) in hulls.items():
        for j in range(1, len(points)):
            a, b = points[j - 1], points[j]
            candidates.append(((a.error - b.error) / (b.bytes - a.bytes), name, j, b.bytes - a.bytes))
    candidates.sort(key=lambda c: -c[0])
    at: dict[str, int] = {}
    blocked: set[str] = set()
    for _, name, j, cost in candidates:
        if name in blocked or j != at.get(name, 0) + 1:
            continue
        if cost > remaining:
            blocked.add(name)
            continue
        at[name] = j
        remaining -= cost
    generator = torch.Generator().manual_seed(seed)
    for name in matrices:
        if not at.get(name):
            continue
        points, svd, steps = hulls[name]
        choice = points[at[name]]
        kept[name] = _build(name, deltas[name], choice, svd, steps, policy, item_bytes, generator)
    return {n: kept[n] for n in deltas if n in kept}


def _spec(packed):
    return {"spec": packed.spec, "tensors": packed.tensors}


def _build(name, delta, choice: Choice, svd, steps, policy, item_bytes, generator) -> Delta:
    if choice.kind == "sign":
        return unpack(**_spec(pack_dense(delta.materialize(), 1)))
    if choice.kind == "dare":
        dtype = torch.float16 if item_bytes == 2 else torch.float32
        return unpack(**_spec(pack_sparse(delta.materialize(), policy.dare, generator, dtype)))
    return build_lowrank(delta, svd, dict(steps[: choice.steps]))


def build_lowrank(delta: Delta, svd, state: Mapping[int, int]) -> Delta:
    """The delta keeping singular directions ``state`` (direction → width)."""
    order = sorted(state)
    U, s, Vh = svd
    if all(state[k] == FLOAT for k in order):
        if isinstance(delta, LowRankDelta) and len(order) >= delta.rank:
            return delta  # a low-rank (LoRA) delta that fits whole is kept exactly
        return from_svd(U, s, Vh, len(order)) if order == list(range(len(order))) else _select(U, s, Vh, order)
    factor = _select(U, s, Vh, order)
    return unpack(**_spec(pack_lowrank(factor.A, factor.B, [state[k] for k in order], torch.float32)))


def _select(U, s, Vh, order) -> LowRankDelta:
    idx = torch.tensor(order)
    root = s[idx].sqrt()
    return LowRankDelta(A=(root[:, None] * Vh[idx]).contiguous(), B=(U[:, idx] * root).contiguous())
