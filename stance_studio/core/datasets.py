"""Stance datasets: JSONL files of examples, ``{"prompt", "response"}`` or chat
``{"messages": [...]}`` (the common layouts prompt/completion, Alpaca's
instruction/input/output and question/answer read too), tokenised with the loss on
response tokens only."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from stance_studio.core.batching import pad_batch
from stance_studio.core.errors import DatasetError
from stance_studio.core.generation import encode_prompt
from stance_studio.core.resources import resource, resources_dir
from stance_studio.core.storage import not_a_file, os_reason
from stance_studio.core.units import human_bytes

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One training example: a user prompt and the response in the stance's voice."""

    prompt: str
    response: str
    system: Optional[str] = None
    line: Optional[int] = field(default=None, compare=False, repr=False)  # where it sits in its file


@dataclass
class StanceDataset:
    name: str
    path: Optional[Path]
    examples: list[Example]
    sha256: str
    description: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)


def builtin_stances() -> dict[str, Path]:
    """The stance datasets shipped in ``resources/stances``, by name."""
    return {p.name[: -len(".jsonl")]: p for p in sorted((resources_dir() / "stances").glob("*.jsonl"))}


def dataset_record(dataset: "StanceDataset") -> str:
    """How a checkpoint names the dataset it was trained on: a built-in stance by its
    name (found again on any machine), any other by its file's absolute path (a
    relative one would be lost as soon as a command runs from another folder)."""
    builtin = builtin_stances().get(dataset.name)
    if builtin is not None and dataset.path is not None and Path(dataset.path).resolve() == builtin.resolve():
        return dataset.name
    return str(Path(dataset.path).absolute()) if dataset.path is not None else str(dataset.path)


def stance_descriptions() -> dict[str, dict]:
    try:
        return json.loads(resource("stances", "stances.json").read_text())
    except Exception:  # noqa: BLE001 - descriptions are optional decoration
        return {}


_ROLES = ("system", "user", "assistant")
_JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}


def _text(value, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise DatasetError(f"{where}: {what} must be a string, not {_JSON_TYPES.get(type(value), type(value).__name__)}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DatasetError(
            f"{where}: {what} holds {value[exc.start]!r} at position {exc.start}, which is not valid Unicode "
            "(a lone surrogate escape); remove it."
        ) from exc
    return value


def _example_from(obj, path: Path, lineno: int) -> Example:
    where = f"{path}, line {lineno}"
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {_JSON_TYPES.get(type(obj), type(obj).__name__)}.")
    if "messages" in obj:
        return _checked(_from_messages(obj["messages"], where, lineno), where)
    prompt_key = _one_of(obj, PROMPT_KEYS, "prompt", where)
    response_key = _one_of(obj, RESPONSE_KEYS, "response", where)
    if prompt_key is None or response_key is None:
        raise DatasetError(
            f"{where}: missing key {'prompt' if prompt_key is None else 'response'!r}; each line needs \"prompt\" and "
            "\"response\" (or \"messages\"; also read: prompt/completion, instruction/input/output, question/answer)."
        )
    prompt = _text(obj[prompt_key], repr(prompt_key), where)
    if prompt_key == "instruction" and obj.get("input") not in (None, ""):  # Alpaca: the input follows the instruction
        prompt = f"{prompt}\n\n{_text(obj['input'], repr('input'), where)}"
    system = obj.get("system")
    return _checked(Example(
        prompt,
        _text(obj[response_key], repr(response_key), where),
        None if system is None else _text(system, "'system'", where),
        lineno,
    ), where)


# The keys a line may name its prompt and response with: the app's own, then the
# common fine-tuning layouts (prompt/completion, Alpaca's instruction/input/output,
# question/answer). A line naming two of one kind is refused, never half read.
PROMPT_KEYS = ("prompt", "instruction", "question")
RESPONSE_KEYS = ("response", "completion", "output", "answer")


def _one_of(obj: dict, keys: Sequence[str], role: str, where: str) -> Optional[str]:
    found = [k for k in keys if k in obj]
    if len(found) > 1:
        raise DatasetError(f"{where}: both {found[0]!r} and {found[1]!r} are given; keep one {role}.")
    return found[0] if found else None


def _from_messages(messages, where: str, lineno: int) -> Example:
    """The last assistant turn and the user turn right before it (earlier turns are
    not trained on); the first system message, if any."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise DatasetError(f"{where}: 'messages' must be a list of {{role, content}} objects.")
    for i, m in enumerate(messages, start=1):
        if m["role"] not in _ROLES:
            raise DatasetError(f"{where}: message {i} has role {m['role']!r}; use 'system', 'user' or 'assistant'.")
        _text(m["content"], f"the content of message {i}", where)
    roles = [m["role"] for m in messages]
    if "user" not in roles or "assistant" not in roles:
        raise DatasetError(f"{where}: 'messages' needs at least one user and one assistant message.")
    reply = len(roles) - 1 - roles[::-1].index("assistant")
    if "user" in roles[reply:]:
        raise DatasetError(
            f"{where}: the last assistant message (message {reply + 1}) must come after the last user message; "
            "end the conversation with the reply to train on."
        )
    before = [i for i in range(reply) if roles[i] != "system"]
    if roles[before[-1]] != "user":
        raise DatasetError(f"{where}: assistant message {reply + 1} must answer a user message, not another assistant message.")
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    return Example(messages[before[-1]]["content"], messages[reply]["content"], system, lineno)


def _checked(example: Example, where: str) -> Example:
    if not example.prompt.strip() or not example.response.strip():
        raise DatasetError(f"{where}: prompt and response must not be empty.")
    return example


MAX_FILE_BYTES = 64 * 2**20  # a stance dataset is a few hundred examples; 64 MiB is thousands of long ones
MAX_LINE_CHARS = 2**20  # one example of a million characters is far past any model's context


def read_limited(path: Path, what: str) -> bytes:
    """The bytes of a text input file, refusing one larger than MAX_FILE_BYTES before
    reading it (a huge file would take minutes and gigabytes to fail later)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DatasetError(
                f"{what} {path} is {human_bytes(size)}; the limit is {human_bytes(MAX_FILE_BYTES)}. Split it."
            )
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{what} {path} cannot be read: {os_reason(exc)}.") from exc


def _check_line_length(path: Path, lineno: int, line: str) -> None:
    if len(line) > MAX_LINE_CHARS:
        raise DatasetError(
            f"{path}, line {lineno}: the line is {len(line):,} characters long; the limit is {MAX_LINE_CHARS:,} "
            "(far more than a model's context). Shorten it."
        )


def load_dataset(path: str | os.PathLike, tokenizer=None, max_length: Optional[int] = None) -> StanceDataset:
    """Read and validate a JSONL stance dataset; with a tokenizer, also check that
    every example fits the model's context (``max_length`` tokens)."""
    text_path = str(path)
    if text_path in builtin_stances() and not Path(text_path).exists():
        path = builtin_stances()[text_path]
    path = Path(path)
    if not path.is_file():
        known = ", ".join(builtin_stances())
        what = not_a_file(path)
        raise DatasetError(f"Dataset {path} {what} (built-in stances: {known}).")
    raw = read_limited(path, "Dataset")
    try:
        # a leading byte-order mark (as Windows editors write) is dropped; only \n ends a
        # JSONL line: a string may hold U+2028 and the like unescaped
        lines = [line.removesuffix("\r") for line in raw.decode("utf-8-sig").split("\n")]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text ({exc}).") from exc
    examples: list[Example] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        _check_line_length(path, lineno, line)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}, line {lineno}: not valid JSON ({exc.msg}).") from exc
        except RecursionError as exc:
            raise DatasetError(f"{path}, line {lineno}: JSON nested too deeply to read.") from exc
        examples.append(_example_from(obj, path, lineno))
    if not examples:
        raise DatasetError(f"{path} holds no examples; add lines like {{\"prompt\": \"...\", \"response\": \"...\"}}.")
    name = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem
    dataset = StanceDataset(
        name=name,
        path=path,
        examples=examples,
        sha256=hashlib.sha256(raw).hexdigest(),
        description=stance_descriptions().get(name, {}).get("description", ""),
    )
    if tokenizer is not None:
        check_context(dataset, tokenizer, max_length)
    return dataset


def check_context(dataset: StanceDataset, tokenizer, max_length: Optional[int] = None) -> None:
    """Raise if an example, chat template included, is longer than ``max_length``
    tokens (default: the tokenizer's ``model_max_length``)."""
    limit = max_length or _context_length(tokenizer)
    if not limit:
        return
    for i, ex in enumerate(dataset.examples, start=1):
        n = len(encode_example(tokenizer, ex)[0])
        if n > limit:
            where = f"line {ex.line}" if ex.line else f"example {i}"
            raise DatasetError(
                f"{dataset.path}, {where}: the example is {n} tokens long, more than the model's context of "
                f"{limit} tokens; shorten it."
            )


def model_context(base) -> Optional[int]:
    """The longest sequence ``base`` takes: the smaller of its position limit and its
    tokenizer's ``model_max_length`` (None when neither is known)."""
    config = getattr(base.model, "config", None)
    limits = [getattr(config, "max_position_embeddings", None), _context_length(base.tokenizer)]
    limits = [x for x in limits if isinstance(x, int) and x > 0]
    return min(limits) if limits else None


def _context_length(tokenizer) -> Optional[int]:
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10**7 else None


def load_probes(path: str | os.PathLike | None = None) -> list[str]:
    """Neutral probe prompts (the shipped categorised set by default)."""
    return [prompt for prompt, _ in read_probe_file(path)]


UNCATEGORISED = "uncategorised"


def read_probe_file(path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """(prompt, category) pairs of a probe file: JSONL ``{"prompt", "category"}``
    (``resources/probes/neutral.jsonl`` by default), or plain text with one prompt per
    line (``#`` lines are comments; category ``uncategorised``)."""
    path = Path(path) if path else resource("probes", "neutral.jsonl")
    if not path.is_file():
        raise DatasetError(f"Probe file {path} {not_a_file(path)}.")
    try:
        text = read_limited(path, "Probe file").decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"Probe file {path} is not UTF-8 text ({exc}).") from exc
    entries: list[tuple[str, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        _check_line_length(path, lineno, line)
        line = line.strip()
        if not line:
            continue
        if path.suffix == ".jsonl":
            entries.append(_probe_line(line, path, lineno))
        elif not line.startswith("#"):
            entries.append((line, UNCATEGORISED))
    if not entries:
        raise DatasetError(f"Probe file {path} holds no prompts (one prompt per line, or JSONL with \"prompt\").")
    return entries


def _probe_line(line: str, path: Path, lineno: int) -> tuple[str, str]:
    where = f"{path}, line {lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not valid JSON ({exc.msg}).") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
        raise DatasetError(f"{where}: each line needs a non-empty string \"prompt\" (and optionally \"category\").")
    category = obj.get("category", UNCATEGORISED)
    if not isinstance(category, str) or not category.strip():
        raise DatasetError(f"{where}: \"category\" must be a non-empty string.")
    return obj["prompt"].strip(), category.strip()


def encode_example(tokenizer, example: Example) -> tuple[list[int], list[int]]:
    """Token ids and labels: the prompt part (chat template) is masked out, so the
    loss falls on the response tokens and the end-of-turn token only."""
    prompt_ids = encode_prompt(tokenizer, example.prompt, example.system)
    response_ids = list(tokenizer(example.response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        response_ids.append(tokenizer.eos_token_id)
    return prompt_ids + response_ids, [IGNORE] * len(prompt_ids) + response_ids


def collate(tokenizer, examples: list[Example]) -> dict[str, torch.Tensor]:
    """A right-padded batch with attention mask and masked labels."""
    encoded = [encode_example(tokenizer, ex) for ex in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids, mask = pad_batch([ids for ids, _ in encoded], pad)
    labels, _ = pad_batch([lab for _, lab in encoded], IGNORE)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
