"""Text generation with the stances the model runs with: one prompt with streaming, many
prompts in left-padded batches, and the side-by-side run over several variants.

The chat template is applied when the tokenizer has one. Greedy decoding is the
default; sampling is seeded, with one random stream per batch row, so a comparison
repeats exactly and a column's text never depends on the other columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from stance_studio.core.batching import pad_batch, shared_prefix
from stance_studio.core.errors import Cancelled, SettingsError, TextError
from stance_studio.core.jobs import CancelFlag, Progress, ProgressCallback, ensure_flag, no_progress


MAX_NEW_TOKENS = 32768
MAX_TEMPERATURE = 100.0


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode. ``greedy=False`` samples with ``temperature``/``top_p``, seeded."""

    max_new_tokens: int = 64
    greedy: bool = True
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    system_prompt: Optional[str] = None
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        """Refuse settings the decoder would fail on deep inside transformers."""
        def bad(what: str) -> SettingsError:
            return SettingsError(f"Generation setting {what}.")

        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise bad(f"max new tokens must be from 1 to {MAX_NEW_TOKENS} (got {self.max_new_tokens})")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise bad(f"min new tokens must be from 0 to max new tokens (got {self.min_new_tokens})")
        if not (math.isfinite(self.temperature) and 0 < self.temperature <= MAX_TEMPERATURE):
            raise bad(f"temperature must be above 0 and at most {MAX_TEMPERATURE:g} (got {self.temperature})")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise bad(f"top-p must be above 0 and at most 1 (got {self.top_p})")
        if not 0 <= self.seed < 2**63:
            raise bad(f"seed must be from 0 to 2^63-1 (got {self.seed})")


@dataclass
class Generation:
    """One prompt's output: decoded text plus the token ids for teacher forcing."""

    prompt: str
    text: str
    prompt_ids: list[int]
    new_ids: list[int]
    # With ``generate_many(..., with_logprobs=True)``: the log-softmax the model gave at
    # each new token ([len(new_ids), vocab]), what teacher-forcing the text would give.
    logprobs: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)


def check_text(text: str, what: str = "The prompt") -> str:
    """``text`` if it is valid Unicode (no lone surrogates, which tokenizers reject
    with an unrelated error), else a TextError saying where."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TextError(
            f"{what} holds a character that is not valid Unicode ({text[exc.start]!r} at position {exc.start}); remove it."
        ) from exc
    return text


def encode_prompt(tokenizer, prompt: str, system: Optional[str] = None) -> list[int]:
    """Token ids of ``prompt`` as a user turn (chat template when there is one)."""
    check_text(prompt)
    if system is not None:
        check_text(system, "The system prompt")
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(ids["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def check_length(base, prompt_tokens: int, settings: GenerationSettings, prompt: Optional[str] = None) -> None:
    """Refuse a prompt that, with the tokens to generate, is longer than the model's
    position limit (past it some models fail inside torch, others run out of memory).
    ``prompt``: named in the message (one of many probes, say) by its first words."""
    limit = getattr(getattr(base.model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0 and prompt_tokens + settings.max_new_tokens > limit:
        named = "" if prompt is None else f" {prompt[:60] + ('…' if len(prompt) > 60 else '')!r}"
        raise TextError(
            f"The prompt{named} is {prompt_tokens} tokens long; with {settings.max_new_tokens} new tokens that is "
            f"more than the model's context of {limit} tokens. Shorten the prompt or ask for fewer tokens."
        )


def _config(base, settings: GenerationSettings, with_logits: bool = False):
    """Decoding is greedy over the scores :class:`_RowSampler` leaves; it does the sampling.
    ``with_logits``: ``generate`` returns each step's logits too."""
    from transformers import GenerationConfig

    tok = base.tokenizer
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens or None,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        **({"output_logits": True, "return_dict_in_generate": True} if with_logits else {}),
    )


def _processors(settings: GenerationSettings, rows: int):
    from transformers import LogitsProcessorList

    return LogitsProcessorList([] if settings.greedy else [_RowSampler(settings, rows)])


class _RowSampler:
    """Seeded sampling with one random stream per batch row, each seeded with the
    same seed: a row's text depends on its own logits, the prompt and the seed only,
    never on its position or on the other rows of the batch."""

    def __init__(self, settings: GenerationSettings, rows: int) -> None:
        from transformers import TopPLogitsWarper

        self.temperature = settings.temperature
        self.warpers = [TopPLogitsWarper(settings.top_p)] if settings.top_p < 1.0 else []
        self.generators = [torch.Generator().manual_seed(settings.seed) for _ in range(rows)]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = self._tempered(scores)
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1).cpu()
        picks = [int(torch.multinomial(probs[row], 1, generator=gen)) for row, gen in enumerate(self.generators)]
        chosen = torch.full_like(scores, -math.inf)
        chosen[torch.arange(len(picks)), torch.tensor(picks, device=scores.device)] = 0.0
        return chosen  # greedy decoding now picks each row's sample

    def _tempered(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores / temperature`` that stays finite for any temperature above 0:
        each row's best score is moved to 0 first and the division is done in float64,
        so a tiny temperature (1e-300) gives its limit, greedy, instead of inf − inf."""
        scores = scores.float()
        shifted = (scores - scores.max(dim=-1, keepdim=True).values).double()
        return (shifted / self.temperature).float()


def _stopper(cancel: CancelFlag):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Cancel()])


def _device(base) -> torch.device:
    return next(base.model.parameters()).device


def _trim(ids: list[int], eos_id: Optional[int]) -> list[int]:
    if eos_id is not None and eos_id in ids:
        return ids[: ids.index(eos_id)]
    return ids


class _BatchStreamer:
    """Receives a batch's token ids from ``generate`` and reports each row's text."""

    def __init__(self, tokenizer, on_token: Callable[[int, str], None], rows: int) -> None:
        self.tokenizer, self.on_token = tokenizer, on_token
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.done = [False] * rows
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        eos = self.tokenizer.eos_token_id
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            if token == eos:
                self.done[row] = True
                continue
            self.ids[row].append(int(token))
            self.on_token(row, self.tokenizer.decode(self.ids[row], skip_special_tokens=True))

    def end(self) -> None:
        pass


class _TextStreamer:
    """Receives token ids from ``generate`` and reports the decoded text so far."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]) -> None:
        self.tokenizer, self.on_text = tokenizer, on_text
        self.ids: list[int] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self.tokenizer.decode(_trim(self.ids, self.tokenizer.eos_token_id), skip_special_tokens=True)
        self.on_text(text)

    def end(self) -> None:
        pass


@torch.no_grad()
def generate(
    base,
    prompt: str,
    settings: GenerationSettings = GenerationSettings(),
    on_text: Optional[Callable[[str], None]] = None,
    cancel: Optional[CancelFlag] = None,
) -> Generation:
    """Generate for one prompt, calling ``on_text(text_so_far)`` after every token."""
    streamer = _TextStreamer(base.tokenizer, on_text) if on_text else None
    return _generate_same_prompt(base, prompt, 1, settings, streamer, ensure_flag(cancel))[0]


def _generate_same_prompt(base, prompt, rows, settings, streamer, cancel: CancelFlag) -> list[Generation]:
    """``rows`` copies of one prompt in one batch (rows differ through per-row deltas)."""
    tok = base.tokenizer
    prompt_ids = encode_prompt(tok, prompt, settings.system_prompt)
    check_length(base, len(prompt_ids), settings)
    input_ids = torch.tensor([prompt_ids] * rows, device=base.device)
    out = base.model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        generation_config=_config(base, settings),
        logits_processor=_processors(settings, rows),
        streamer=streamer,
        stopping_criteria=_stopper(cancel),
    )
    cancel.raise_if_set("generation")
    results = []
    for row in range(rows):
        new_ids = _trim(out[row, len(prompt_ids):].tolist(), tok.eos_token_id)
        results.append(Generation(prompt, tok.decode(new_ids, skip_special_tokens=True), prompt_ids, new_ids))
    return results


@torch.no_grad()
def generate_many(
    base,
    prompts: Sequence[str],
    settings: GenerationSettings = GenerationSettings(),
    batch_size: int = 8,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    with_logprobs: bool = False,
    share_prefix: bool = False,
) -> list[Generation]:
    """Generate for many prompts in left-padded batches (same settings for all).

    ``with_logprobs`` keeps each new token's log-softmax (:attr:`Generation.logprobs`),
    so the model's likelihood of its own answers needs no second pass.
    ``share_prefix``: the tokens every prompt of a batch starts with (the system
    prompt) run once (:func:`~stance_studio.core.batching.shared_prefix`); not under
    per-row stance weights."""
    cancel = ensure_flag(cancel)
    tok = base.tokenizer
    encoded = [encode_prompt(tok, p, settings.system_prompt) for p in prompts]
    if encoded:  # the longest prompt, named: one of many probes is hard to find otherwise
        longest = max(range(len(encoded)), key=lambda i: len(encoded[i]))
        check_length(base, len(encoded[longest]), settings, prompts[longest])
    results: list[Generation] = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for start in range(0, len(prompts), batch_size):
        cancel.raise_if_set("generation")
        chunk = encoded[start : start + batch_size]
        shared = shared_prefix(base.model, chunk, pad, grow=settings.max_new_tokens) if share_prefix else None
        if shared is None:
            input_ids, mask = pad_batch(chunk, pad, left=True, device=_device(base))
            extra = {}
        else:
            input_ids, mask, extra = shared.ids, shared.mask, shared.cache_kwargs
        width = input_ids.shape[1]
        out = base.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            generation_config=_config(base, settings, with_logits=with_logprobs),
            logits_processor=_processors(settings, len(chunk)),
            stopping_criteria=_stopper(cancel),
            **extra,
        )
        cancel.raise_if_set("generation")
        sequences = out.sequences if with_logprobs else out
        for row, ids in enumerate(chunk):
            raw = _trim(sequences[row, width:].tolist(), tok.eos_token_id)
            new_ids = [t for t in raw if t != pad] if pad != tok.eos_token_id else raw
            gen = Generation(prompts[start + row], tok.decode(new_ids, skip_special_tokens=True), ids, new_ids)
            if with_logprobs and new_ids and len(new_ids) == len(raw):
                # (a row that generated the pad token itself reads differently than it was
                # generated: it has none, and its likelihood is teacher-forced instead)
                gen.logprobs = torch.log_softmax(
                    torch.stack([step[row] for step in out.logits[: len(new_ids)]]).float(), dim=-1)
            results.append(gen)
        progress(Progress("generate", len(results), len(prompts), f"Generated {len(results)}/{len(prompts)}"))
    return results


def side_by_side(
    base,
    blender,
    columns: Sequence[Sequence[tuple[object, float]]],
    prompt: str,
    settings: GenerationSettings = GenerationSettings(),
    on_token: Optional[Callable[[int, str], None]] = None,
    progress: ProgressCallback = no_progress,
    cancel: Optional[CancelFlag] = None,
    allow_mismatch: bool = False,
    batched: bool = True,
) -> list[Generation]:
    """Generate ``prompt`` once per column, each column a blend (``[]`` = base).

    With ``batched`` (the default) all columns run as one batch, batch row ``j``
    with column ``j``'s stance weights (:meth:`StanceRuntime.rows`); otherwise one
    column at a time, each with its own weights. Either way no weight is written
    and the blend the model shows is the same before and after.
    """
    cancel = ensure_flag(cancel)
    for blend in columns:
        for src, _ in blend:
            blender.check(src, allow_mismatch=allow_mismatch)
    runtime = blender.runtime
    if batched and len(columns) > 1:
        with runtime.rows(columns):
            return _generate_rows(base, prompt, len(columns), settings, on_token, progress, cancel)
    results: list[Generation] = []
    for index, blend in enumerate(columns):
        cancel.raise_if_set("generation")
        progress(Progress("generate", index, len(columns), f"Column {index + 1} of {len(columns)}"))
        callback = (lambda text, i=index: on_token(i, text)) if on_token else None
        with runtime.scoped(blend):
            results.append(generate(base, prompt, settings, on_text=callback, cancel=cancel))
    progress(Progress("generate", len(columns), len(columns), "Done"))
    return results


@torch.no_grad()
def _generate_rows(base, prompt, rows, settings, on_token, progress, cancel) -> list[Generation]:
    streamer = _BatchStreamer(base.tokenizer, on_token, rows) if on_token else None
    progress(Progress("generate", 0, rows, f"Generating {rows} columns in one batch"))
    results = _generate_same_prompt(base, prompt, rows, settings, streamer, cancel)
    progress(Progress("generate", rows, rows, "Done"))
    return results


__all__ = [
    "Cancelled",
    "Generation",
    "GenerationSettings",
    "encode_prompt",
    "generate",
    "generate_many",
    "side_by_side",
]
