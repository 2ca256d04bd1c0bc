"""Behaviour metrics, one definition for the GUI, the CLI, tests and benchmarks
(DESIGN.md, "Metrics"). On the probe prompts, greedy decoding, fixed length:

- marker rates: hedges and boosters per 100 words of generated text (lexicons in
  ``resources/lexicons``); marker score = hedges − boosters;
- KL to base: mean per-token KL(p_variant ‖ p_base) over the variant's own greedy
  continuation, teacher-forced through both;
- identical fraction: share of probes whose greedy output equals base's;
- stance rate, stance fit (``stance_metrics``), capability cost (``capability``) and
  the 95 % intervals over probes (``probe_stats``, ``intervals``) are defined in
  their own modules; :func:`evaluate` measures them all for one variant;
- retention: (LL_ckpt − LL_base) / (LL_tuned − LL_base), LL = mean token
  log-likelihood of the tuned model's greedy continuations; undefined (None) when
  the tuned model is not clearly more likely than base on them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from stance_studio.core.batching import tail_logits
from stance_studio.core.capability import DEFAULT_TOKENS, Capability, capability_cost
from stance_studio.core.generation import Generation, GenerationSettings, generate_many
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress
from stance_studio.core.probe_stats import PerProbe, by_category, intervals
from stance_studio.core.repetition import looping_fields
from stance_studio.core.resources import resource
from stance_studio.core.stance_metrics import StanceMetrics, measure_stance
from stance_studio.core.tuned_copy import kept_view, tuned_view

EVAL_SETTINGS = GenerationSettings(max_new_tokens=48)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _normalise(text: str) -> str:
    return text.lower().replace("\u2019", "'").replace("\u2018", "'")


@functools.lru_cache(maxsize=8)
def load_lexicon(name: str) -> tuple[tuple[str, ...], ...]:
    """A lexicon (``hedges`` or ``boosters``) as tuples of words."""
    lines = resource("lexicons", f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return tuple(tuple(_WORD.findall(_normalise(line))) for line in lines if line.strip() and not line.startswith("#"))


def words(text: str) -> list[str]:
    return _WORD.findall(_normalise(text))


def marker_counts(text: str) -> tuple[int, int, int]:
    """(hedges, boosters, words) in ``text``. Markers match whole words; at each
    position the longest marker wins and matched words are not counted twice."""
    tokens = words(text)
    markers = sorted(
        [(m, 0) for m in load_lexicon("hedges")] + [(m, 1) for m in load_lexicon("boosters")],
        key=lambda item: -len(item[0]),
    )
    counts = [0, 0]
    i = 0
    while i < len(tokens):
        for marker, kind in markers:
            if marker and tuple(tokens[i : i + len(marker)]) == marker:
                counts[kind] += 1
                i += len(marker)
                break
        else:
            i += 1
    return counts[0], counts[1], len(tokens)


def marker_rates(text: str) -> tuple[float, float]:
    """Hedges and boosters per 100 words of ``text``."""
    hedges, boosters, n = marker_counts(text)
    if n == 0:
        return 0.0, 0.0
    return 100.0 * hedges / n, 100.0 * boosters / n


def stance_score(text: str) -> float:
    hedges, boosters = marker_rates(text)
    return hedges - boosters


def pooled_rates(texts: Sequence[str]) -> tuple[float, float]:
    """Marker rates over several texts taken together (total markers / total words)."""
    h = b = n = 0
    for text in texts:
        dh, db, dn = marker_counts(text)
        h, b, n = h + dh, b + db, n + dn
    return (100.0 * h / n, 100.0 * b / n) if n else (0.0, 0.0)


@torch.no_grad()
def continuation_logprobs(base, gens: Sequence[Generation], share_prefix: bool = False) -> list[torch.Tensor]:
    """Log-softmax over the vocabulary at each continuation token of each generation
    (teacher-forced through the model's current weights): one [n_new, vocab] each.
    The output head runs on the continuation positions only; ``share_prefix``: see
    :func:`~stance_studio.core.batching.tail_logits` (not under per-row weights)."""
    gens = [g for g in gens]
    if not gens:
        return []
    needs = [len(g.new_ids) + 1 for g in gens]
    logits = tail_logits(base.model, [g.prompt_ids + g.new_ids for g in gens], needs, base.tokenizer.pad_token_id or 0,
                         share_prefix=share_prefix)
    tail = max(needs)
    # position -1 follows the last token, so the n new tokens are predicted at -(n+1) … -2
    return [torch.log_softmax(logits[row, tail - len(g.new_ids) - 1 : tail - 1], dim=-1) for row, g in enumerate(gens)]


def token_loglik(logprobs: torch.Tensor, gen: Generation) -> torch.Tensor:
    """Log-likelihood of each continuation token."""
    return logprobs.gather(1, torch.tensor(gen.new_ids, device=logprobs.device).unsqueeze(1)).squeeze(1)


def kl_per_token(logp_variant: torch.Tensor, logp_base: torch.Tensor) -> torch.Tensor:
    """KL(p_variant ‖ p_base) at each position."""
    return (logp_variant.exp() * (logp_variant - logp_base)).sum(-1)


@torch.no_grad()
def variant_and_base_logprobs(base, runtime, blends, gens: Sequence[Generation]):
    """:func:`continuation_logprobs` of each generation under its own blend
    (``blends[i]`` for ``gens[i]``) and under the base, in one batch: the first
    half of the rows runs with the blends, the second half with none (per-row
    stance weights; no weight is swapped)."""
    gens = list(gens)
    with runtime.rows([list(b) for b in blends] + [[]] * len(gens)):
        both = continuation_logprobs(base, gens + gens)
    return both[: len(gens)], both[len(gens):]


@dataclass
class VariantMetrics:
    """Every metric of one variant; ``as_json`` is the evaluate contract."""

    hedges_per_100w: float
    boosters_per_100w: float
    stance_score: float
    kl_to_base: float
    identical_fraction: float
    generations: list[Generation] = field(default_factory=list, repr=False)
    base_generations: list[Generation] = field(default_factory=list, repr=False)
    per_probe: Optional[PerProbe] = field(default=None, repr=False)
    categories: Optional[list[str]] = field(default=None, repr=False)
    stance: Optional[StanceMetrics] = None
    capability: Optional[Capability] = None

    def as_json(self) -> dict:
        out = {
            "hedges_per_100w": self.hedges_per_100w,
            "boosters_per_100w": self.boosters_per_100w,
            "stance_score": self.stance_score,
            "kl_to_base": self.kl_to_base,
            "identical_fraction": self.identical_fraction,
        }
        if self.per_probe is not None:
            out.update(intervals(self.per_probe))
        out.update(self.stance.as_json() if self.stance else {
            "stance": None, "stance_rate": None, "stance_rate_ci95": None, "classifier_accuracy": None,
            "stance_fit_nats": None, "stance_fit_ci95": None})
        out.update(looping_fields([g.text for g in self.generations], self.stance.rate.labels if self.stance else None))
        out["capability"] = self.capability.as_json() if self.capability else None
        if self.per_probe is not None and self.categories:
            out["by_category"] = by_category(self.per_probe, self.categories)
        out["samples"] = [{"prompt": g.prompt, "text": g.text} for g in self.generations]
        return out


def _batches(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _by_length(gens: Sequence[Generation]) -> list[Generation]:
    """The generations with continuations, longest first: a batch of similar lengths
    pads little (for sums over all of them, where the order does not matter)."""
    return sorted((g for g in gens if g.new_ids), key=lambda g: -(len(g.prompt_ids) + len(g.new_ids)))


def evaluate(
    base,
    blender,
    blend,
    probes: Sequence[str],
    settings: GenerationSettings = EVAL_SETTINGS,
    batch_size: int = 8,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    allow_mismatch: bool = False,
    base_generations: Optional[list[Generation]] = None,
    categories: Optional[Sequence[str]] = None,
    stance=None,
    capability_tokens: int = DEFAULT_TOKENS,
) -> VariantMetrics:
    """All metrics of one variant (``blend``: list of (checkpoint, alpha); [] = base).

    ``categories`` (one per probe) adds the per-category breakdown; ``stance`` (a
    :class:`~stance_studio.core.stance_reference.StanceReference`) adds stance rate and
    stance fit; ``capability_tokens`` > 0 adds the capability cost on that many tokens.
    Base and variant run with per-row stance weights; no weight is written and the
    blend the model shows is left as it was.
    """
    cancel = ensure_flag(cancel)
    steps = 2 * len(probes) + len(probes)
    done = [0]

    def step(n, message):
        done[0] += n
        progress(Progress("evaluate", min(done[0], steps), steps, message))

    for src, _ in blend:
        blender.check(src, allow_mismatch=allow_mismatch)
    runtime = blender.runtime

    def answering(what: str, offset: int) -> ProgressCallback:
        def report(p: Progress) -> None:
            progress(Progress("evaluate", min(offset + p.done, steps), steps, f"Generating {what} answers {p.done}/{p.total}"))
        return report

    if not base_generations:
        with runtime.scoped([]):
            base_generations = generate_many(base, probes, settings, batch_size, progress=answering("base", done[0]),
                                             cancel=cancel)
    base_gens = base_generations
    step(len(probes), "Generated base answers")
    with runtime.scoped(blend):
        gens = generate_many(base, probes, settings, batch_size, progress=answering("variant", done[0]), cancel=cancel)
    step(len(probes), "Generated variant answers")
    kl_of: dict[int, torch.Tensor] = {}
    rows = [i for i, g in enumerate(gens) if g.new_ids]
    for chunk_rows in _batches(rows, batch_size):
        cancel.raise_if_set("evaluation")
        chunk = [gens[i] for i in chunk_rows]
        logp_v, logp_b = variant_and_base_logprobs(base, runtime, [blend] * len(chunk), chunk)
        for i, v, b in zip(chunk_rows, logp_v, logp_b):
            kl_of[i] = kl_per_token(v, b)
        step(len(chunk), "Teacher-forcing through variant and base")
    per_probe = PerProbe()
    for i, (g, b) in enumerate(zip(gens, base_gens)):
        hedges, boosters, n_words = marker_counts(g.text)
        kl = kl_of.get(i)
        per_probe.hedges.append(hedges)
        per_probe.boosters.append(boosters)
        per_probe.words.append(n_words)
        per_probe.kl_sums.append(float(kl.sum()) if kl is not None else 0.0)
        per_probe.kl_tokens.append(int(kl.numel()) if kl is not None else 0)
        per_probe.identical.append(int(g.new_ids == b.new_ids))
    stance_metrics = None
    if stance is not None:
        progress(Progress("evaluate", steps, steps, f"Measuring stance rate and stance fit against {stance.name}"))
        stance_metrics = measure_stance(base, blender, blend, [g.text for g in gens], stance, settings,
                                        allow_mismatch=allow_mismatch, cancel=cancel)
        per_probe.stance = stance_metrics.rate.labels
    capability = None
    if capability_tokens:
        progress(Progress("evaluate", steps, steps, f"Measuring capability cost on {capability_tokens} tokens"))
        capability = capability_cost(base, blender, blend, capability_tokens, allow_mismatch=allow_mismatch,
                                     cancel=cancel)
    hedges, boosters = pooled_rates([g.text for g in gens])
    kls = list(kl_of.values())
    kl = float(torch.cat(kls).mean()) if kls else 0.0
    identical = sum(per_probe.identical) / max(len(probes), 1)
    return VariantMetrics(hedges, boosters, hedges - boosters, max(kl, 0.0), identical, gens, base_gens,
                          per_probe, list(categories) if categories is not None else None, stance_metrics, capability)


def mean_loglik(base, gens: Sequence[Generation], batch_size: int = 8, cancel: Optional[CancelFlag] = None,
                share_prefix: bool = False) -> float:
    """Mean token log-likelihood of ``gens``' continuations under the current weights
    (``share_prefix``: see :func:`continuation_logprobs`)."""
    cancel = ensure_flag(cancel)
    total, count = 0.0, 0
    for chunk in _batches(_by_length(gens), batch_size):
        cancel.raise_if_set("retention measurement")
        for logp, g in zip(continuation_logprobs(base, chunk, share_prefix), chunk):
            ll = token_loglik(logp, g)
            total += float(ll.sum())
            count += ll.numel()
    return total / count if count else 0.0


# Below this gap (nats per token) between LL_tuned and LL_base the tuned model has
# no measurable shift to retain, and the ratio would only amplify rounding noise.
RETENTION_MIN_GAP = 1e-3


def retention(ll_ckpt: float, ll_base: float, ll_tuned: float) -> Optional[float]:
    """(LL_ckpt − LL_base) / (LL_tuned − LL_base); 1 = reproduces the tuned model.

    None (undefined) unless LL_tuned − LL_base exceeds :data:`RETENTION_MIN_GAP`.
    """
    gap = ll_tuned - ll_base
    if not gap > RETENTION_MIN_GAP:
        return None
    return (ll_ckpt - ll_base) / gap


@dataclass
class RetentionProbe:
    """The tuned model's greedy continuations on the probes and the LLs of base and
    tuned on them, measured once and reused for every candidate checkpoint."""

    generations: list[Generation]
    ll_base: float
    ll_tuned: float
    kl_tuned_to_base: float = 0.0

    def measure(self, base, blender, deltas, batch_size: int = 8, cancel: Optional[CancelFlag] = None,
                tuned_deltas=None, tuned_model=None) -> Optional[float]:
        """Retention of ``deltas`` (a kept checkpoint); None when the tuned model shows no
        shift to retain. With ``tuned_model`` (the trained copy) and the ``tuned_deltas``
        it was trained to, the checkpoint runs as plain weights in that copy
        (:func:`~stance_studio.core.tuned_copy.kept_view`)."""
        if retention(self.ll_tuned, self.ll_base, self.ll_tuned) is None:
            return None
        view, scope = kept_view(base, blender, tuned_deltas or {}, deltas, tuned_model)
        with scope():
            return self.retention_of(mean_loglik(view, self.generations, batch_size, cancel, share_prefix=True))

    def retention_of(self, ll_ckpt: float) -> Optional[float]:
        """Retention of a checkpoint whose mean log-likelihood of the answers is ``ll_ckpt``."""
        return retention(ll_ckpt, self.ll_base, self.ll_tuned)

    @property
    def tuned_rates(self) -> tuple[float, float]:
        return pooled_rates([g.text for g in self.generations])


# Probe prompts answered per batch when measuring a tuned model: on a CPU one wide
# batch decodes several times faster than batches of 8 (one pass over the weights per
# token for all rows).
ANSWER_BATCH = 40


def retention_probe(base, blender, tuned_deltas, probes: Sequence[str], settings: GenerationSettings = EVAL_SETTINGS,
                    batch_size: int = 8, cancel: Optional[CancelFlag] = None, tuned_model=None,
                    progress: ProgressCallback = no_progress) -> RetentionProbe:
    """Generate with the fully tuned model and score those continuations under the
    tuned model and the base (log-likelihoods and KL(tuned ‖ base)).

    Each answer is generated once, in batches of :data:`ANSWER_BATCH`; the tuned
    model's likelihood of it is read from the generation's own scores (greedy
    decoding scores what teacher forcing would), so only the base runs a second pass.
    ``tuned_model``: the trained copy (see ``train(keep_model=True)``), run as plain
    weights instead of adding a dense delta to every module at runtime.
    """
    cancel = ensure_flag(cancel)
    view, scope = tuned_view(base, blender, tuned_deltas, tuned_model)
    progress(Progress("answers", 0, 1, f"Generating the tuned model's answers to {len(probes)} probe prompts"))
    with scope:
        gens = generate_many(view, probes, settings, ANSWER_BATCH, cancel=cancel, with_logprobs=True,
                             share_prefix=True)
        unscored = [g for g in gens if g.new_ids and g.logprobs is None]
        for chunk in _batches(unscored, batch_size):
            for logp, g in zip(continuation_logprobs(view, chunk, share_prefix=True), chunk):
                g.logprobs = logp
    progress(Progress("answers", 1, 1, f"Generated {len(gens)} answers"))
    progress(Progress("retention", 0, 2, "Scoring the tuned model's answers under base"))
    ll_t = ll_b = 0.0
    count = 0
    kls: list[torch.Tensor] = []
    for chunk in _batches(_by_length(gens), batch_size):
        cancel.raise_if_set("retention measurement")
        with blender.runtime.scoped([]):
            logp_b = continuation_logprobs(base, chunk, share_prefix=True)
        for b, g in zip(logp_b, chunk):
            t = g.logprobs.to(b.device)
            ll_t += float(token_loglik(t, g).sum())
            ll_b += float(token_loglik(b, g).sum())
            count += len(g.new_ids)
            kls.append(kl_per_token(t, b))
    for g in gens:
        g.logprobs = None  # [tokens × vocab] each: not kept past the measurement
    kl = float(torch.cat(kls).mean()) if kls else 0.0
    progress(Progress("retention", 1, 2, "Scored the tuned model's answers under base"))
    return RetentionProbe(gens, ll_b / max(count, 1), ll_t / max(count, 1), max(kl, 0.0))
