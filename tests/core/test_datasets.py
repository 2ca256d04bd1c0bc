"""Stance datasets: validation with errors naming file and line, the shipped
resources, and tokenisation with the loss on response tokens only."""

from __future__ import annotations

import hashlib
import json

import pytest

from stance_studio.core.datasets import (
    IGNORE,
    Example,
    builtin_stances,
    collate,
    encode_example,
    load_dataset,
    load_probes,
    model_context,
)
from stance_studio.core.errors import DatasetError
from stance_studio.core.generation import encode_prompt


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_three_report_stances_ship_with_enough_examples():
    stances = builtin_stances()
    assert {"curious-uncertainty", "confident-expertise", "engaged-difficulty"} <= set(stances)
    for name, path in stances.items():
        data = load_dataset(path)
        assert data.name == name and len(data) >= 12
        assert data.description, f"{name} has no description in stances.json"
        assert len({ex.prompt for ex in data.examples}) == len(data), f"{name} repeats a prompt"


def test_a_builtin_stance_loads_by_name_and_hashes_its_bytes():
    data = load_dataset("curious-uncertainty")
    assert data.path == builtin_stances()["curious-uncertainty"]
    assert data.sha256 == hashlib.sha256(data.path.read_bytes()).hexdigest()


def test_probe_prompts_are_many_and_appear_in_no_training_set():
    probes = load_probes()
    assert len(probes) >= 30 and not any(p.startswith("#") for p in probes)
    trained = {ex.prompt.strip().lower() for path in builtin_stances().values() for ex in load_dataset(path).examples}
    assert not trained & {p.lower() for p in probes}


def test_prompt_response_and_chat_message_lines_both_load(tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", [
        json.dumps({"prompt": "Why is ice slippery?", "response": "Perhaps a thin film of water."}),
        "",
        json.dumps({"messages": [
            {"role": "system", "content": "Be curious."},
            {"role": "user", "content": "What is fog?"},
            {"role": "assistant", "content": "I think it is a cloud near the ground."},
        ]}),
    ])
    data = load_dataset(path)
    assert data.name == "mixed"
    assert data.examples == [
        Example("Why is ice slippery?", "Perhaps a thin film of water."),
        Example("What is fog?", "I think it is a cloud near the ground.", "Be curious."),
    ]


def test_a_conversation_trains_the_last_reply_on_the_turn_it_answers(tmp_path):
    path = write_lines(tmp_path / "chat.jsonl", [json.dumps({"messages": [
        {"role": "system", "content": "Be curious."},
        {"role": "user", "content": "What is fog?"},
        {"role": "assistant", "content": "A low cloud, I think."},
        {"role": "user", "content": "And mist?"},
        {"role": "assistant", "content": "Perhaps a thinner fog."},
    ]}), json.dumps({"prompt": "Why?", "response": "Maybe.", "system": None})])
    assert load_dataset(path).examples == [
        Example("And mist?", "Perhaps a thinner fog.", "Be curious."),
        Example("Why?", "Maybe."),
    ]


def test_the_common_fine_tuning_layouts_load_too(tmp_path):
    """prompt/completion, Alpaca's instruction/input/output and question/answer."""
    path = write_lines(tmp_path / "layouts.jsonl", [
        json.dumps({"prompt": "Why is ice slippery?", "completion": "Perhaps a film of water."}),
        json.dumps({"instruction": "Explain fog.", "input": "", "output": "I think it is a low cloud."}),
        json.dumps({"instruction": "Summarise the text.", "input": "Fog is a cloud.", "output": "Maybe: a cloud."}),
        json.dumps({"question": "What is dew?", "answer": "Possibly condensed water.", "system": "Be curious."}),
    ])
    assert load_dataset(path).examples == [
        Example("Why is ice slippery?", "Perhaps a film of water."),
        Example("Explain fog.", "I think it is a low cloud."),
        Example("Summarise the text.\n\nFog is a cloud.", "Maybe: a cloud."),
        Example("What is dew?", "Possibly condensed water.", "Be curious."),
    ]


@pytest.mark.parametrize(
    "lines, expected",
    [
        (['{"prompt": "a", "response": "b"}', '{"prompt": "a", "response": '], r"line 2: not valid JSON"),
        (['{"prompt": "a", "response": "b", "output": "c"}'], r"line 1: both 'response' and 'output' are given"),
        (['{"question": "a", "instruction": "q", "answer": "b"}'], r"line 1: both 'instruction' and 'question'"),
        (['{"instruction": "a", "input": 3, "output": "b"}'], r"line 1: 'input' must be a string, not a number"),
        (['{"prompt": "a"}'], r"line 1: missing key 'response'"),
        (['{"response": "b"}'], r"line 1: missing key 'prompt'"),
        (['["a", "b"]'], r"line 1: expected a JSON object"),
        (['{"prompt": "a", "response": "   "}'], r"line 1: prompt and response must not be empty"),
        (['{"messages": [{"role": "user", "content": "hi"}]}'], r"line 1: 'messages' needs at least one user"),
        (['{"messages": "hello"}'], r"line 1: 'messages' must be a list"),
        (['{"prompt": null, "response": "b"}'], r"line 1: 'prompt' must be a string, not null"),
        (['{"prompt": "a", "response": 3}'], r"line 1: 'response' must be a string, not a number"),
        (['{"prompt": "a", "response": "b", "system": ["x"]}'], r"line 1: 'system' must be a string, not an array"),
        (['{"messages": [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "b"}]}'],
         r"line 1: the content of message 1 must be a string, not an array"),
        (['{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": null}]}'],
         r"line 1: the content of message 2 must be a string, not null"),
        (['{"messages": [{"role": "tool", "content": "a"}, {"role": "assistant", "content": "b"}]}'],
         r"line 1: message 1 has role 'tool'"),
        (['{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, '
          '{"role": "user", "content": "c"}]}'], r"line 1: the last assistant message \(message 2\) must come after"),
        (['{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, '
          '{"role": "assistant", "content": "c"}]}'], r"line 1: assistant message 3 must answer a user message"),
    ],
)
def test_a_malformed_line_is_reported_with_file_and_line(tmp_path, lines, expected):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DatasetError, match=expected) as info:
        load_dataset(path)
    assert str(path) in str(info.value)


def test_an_empty_file_is_refused(tmp_path):
    path = write_lines(tmp_path / "empty.jsonl", ["", "   "])
    with pytest.raises(DatasetError, match="holds no examples"):
        load_dataset(path)


def test_a_missing_file_names_the_builtin_stances(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*curious-uncertainty"):
        load_dataset(tmp_path / "nope.jsonl")


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"prompt": "caf\xe9", "response": "ok"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_dataset(path)


def test_an_example_longer_than_the_context_is_refused(tmp_path, tiny):
    path = write_lines(tmp_path / "long.jsonl", [
        json.dumps({"prompt": "Short?", "response": "Yes."}),
        "",
        json.dumps({"prompt": "Long?", "response": "word " * 400}),
    ])
    assert len(load_dataset(path, tiny.tokenizer, max_length=2000)) == 2
    with pytest.raises(DatasetError, match=r"long.jsonl, line 3: the example is \d+ tokens long, more than the "
                                           r"model's context of 100 tokens"):
        load_dataset(path, tiny.tokenizer, max_length=100)


def test_the_model_context_is_the_smaller_of_positions_and_tokenizer_limit(tiny, monkeypatch):
    assert model_context(tiny) == tiny.model.config.max_position_embeddings == 512
    monkeypatch.setattr(tiny.tokenizer, "model_max_length", 300)
    assert model_context(tiny) == 300


def test_loss_falls_on_response_tokens_and_end_of_turn_only(tiny):
    tok = tiny.tokenizer
    example = Example("What causes the seasons?", "The tilt of the axis, I think.")
    ids, labels = encode_example(tok, example)
    prompt_ids = encode_prompt(tok, example.prompt)
    response_ids = tok(example.response, add_special_tokens=False)["input_ids"]
    assert ids == prompt_ids + response_ids + [tok.eos_token_id]
    assert labels[: len(prompt_ids)] == [IGNORE] * len(prompt_ids)
    assert labels[len(prompt_ids):] == response_ids + [tok.eos_token_id]


def test_the_prompt_part_matches_what_generation_feeds_the_model(tiny):
    """Training and generation must see the same chat template, system turn included."""
    tok = tiny.tokenizer
    example = Example("Why is the sea salty?", "Perhaps rivers.", system="Be brief.")
    ids, labels = encode_example(tok, example)
    prompt_ids = encode_prompt(tok, example.prompt, "Be brief.")
    assert ids[: len(prompt_ids)] == prompt_ids
    assert tok.decode(prompt_ids).endswith("<|im_start|>assistant\n")


def test_a_batch_is_right_padded_with_masked_labels(tiny):
    tok = tiny.tokenizer
    examples = [Example("Why?", "Because."), Example("How does a bridge carry weight?", "Through tension and compression.")]
    batch = collate(tok, examples)
    lengths = [len(encode_example(tok, ex)[0]) for ex in examples]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    short = lengths.index(min(lengths))
    assert (batch["labels"][short, lengths[short]:] == IGNORE).all()
    assert (batch["input_ids"][short, lengths[short]:] == tok.pad_token_id).all()
    for row, ex in enumerate(examples):
        assert batch["labels"][row, : lengths[row]].tolist() == encode_example(tok, ex)[1]


def test_probe_files_skip_comments_and_blank_lines(tmp_path):
    path = write_lines(tmp_path / "probes.txt", ["# my probes", "What is rain?", "", "  Why is grass green?  "])
    assert load_probes(path) == ["What is rain?", "Why is grass green?"]


def test_a_probe_file_without_prompts_or_missing_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="holds no prompts"):
        load_probes(write_lines(tmp_path / "none.txt", ["# only a comment"]))
    with pytest.raises(DatasetError, match="does not exist"):
        load_probes(tmp_path / "missing.txt")


def test_a_leading_byte_order_mark_is_dropped_from_datasets_and_probe_files(tmp_path):
    """Windows editors save UTF-8 with a BOM: the dataset was refused ("Unexpected UTF-8
    BOM") and a plain probe file's first prompt began with an invisible U+FEFF."""
    bom = b"\xef\xbb\xbf"
    line = json.dumps({"prompt": "Why?", "response": "I think so."})
    data = tmp_path / "bom.jsonl"
    data.write_bytes(bom + f"{line}\r\n{line}\r\n".encode())
    dataset = load_dataset(data)
    assert [e.prompt for e in dataset.examples] == ["Why?", "Why?"]
    assert dataset.sha256 == hashlib.sha256(data.read_bytes()).hexdigest()
    text = tmp_path / "probes.txt"
    text.write_bytes(bom + "What is rain?\nWhy?\n".encode())
    assert load_probes(text) == ["What is rain?", "Why?"]
    probes = tmp_path / "probes.jsonl"
    probes.write_bytes(bom + json.dumps({"prompt": "What is rain?"}).encode() + b"\n")
    assert load_probes(probes) == ["What is rain?"]
    inner = tmp_path / "inner.jsonl"  # a BOM anywhere but the start is text, and not JSON
    inner.write_bytes(f"{line}\n".encode() + bom + f"{line}\n".encode())
    with pytest.raises(DatasetError, match="line 2: not valid JSON"):
        load_dataset(inner)


def test_a_checkpoint_names_a_built_in_dataset_by_name_and_any_other_by_path(tmp_path):
    import shutil

    from stance_studio.core.datasets import builtin_stances, dataset_record

    builtin = load_dataset("curious-uncertainty")
    assert dataset_record(builtin) == "curious-uncertainty"  # found again on any machine
    copy = tmp_path / "curious-uncertainty.jsonl"  # same name, the user's own file
    shutil.copy(builtin_stances()["curious-uncertainty"], copy)
    assert dataset_record(load_dataset(copy)) == str(copy)


def test_a_dataset_given_by_a_relative_path_is_recorded_by_its_absolute_one(tmp_path, monkeypatch):
    """Training from 'data/x.jsonl' recorded that relative path, so evaluating from any
    other folder said the file "no longer exists" though it was untouched."""
    from stance_studio.core.datasets import dataset_record

    (tmp_path / "data").mkdir()
    write_lines(tmp_path / "data" / "x.jsonl", [json.dumps({"prompt": "Why?", "response": "I think so."})] * 3)
    monkeypatch.chdir(tmp_path)
    record = dataset_record(load_dataset("data/x.jsonl"))
    assert record == str(tmp_path / "data" / "x.jsonl")
    monkeypatch.chdir(tmp_path / "data")
    assert load_dataset(record).examples[0].prompt == "Why?"
    assert dataset_record(load_dataset("curious-uncertainty")) == "curious-uncertainty"  # built-ins by name
