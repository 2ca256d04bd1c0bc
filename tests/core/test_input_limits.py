"""Inputs a careless or hostile user might give: each is refused with the app's own
error naming the problem, before anything deep in torch or transformers fails."""

import json

import pytest

from stance_studio.core import datasets
from stance_studio.core.datasets import load_dataset, load_probes
from stance_studio.core.errors import DatasetError, SettingsError, TextError, VariantSpecError
from stance_studio.core.generation import GenerationSettings, encode_prompt
from stance_studio.core.variants import MAX_WEIGHT, check_weight, parse_variant


@pytest.mark.parametrize("spec", ["a=1e309", "a=-1e309", "a=1e308", "a=100.5", "a=1,b=-101", "base=0.5", "a,base"])
def test_absurd_or_reserved_weights_are_refused(spec):
    with pytest.raises(VariantSpecError):
        parse_variant(spec)


def test_weights_in_range_parse():
    assert parse_variant(f"a={MAX_WEIGHT},b=-{MAX_WEIGHT},c=1e-3").weights == (("a", 100.0), ("b", -100.0), ("c", 0.001))
    for bad in (float("nan"), float("inf"), 1e308, "x"):
        with pytest.raises(VariantSpecError):
            check_weight(bad)


def test_the_blender_refuses_an_absurd_weight_and_keeps_the_base(tiny, deltas_factory):
    import torch

    from stance_studio.core.blend import Blender
    from stance_studio.core.checkpoints import make_checkpoint

    ckpt = make_checkpoint("s", deltas_factory(tiny), tiny)
    before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    blender = Blender(tiny)
    with pytest.raises(VariantSpecError, match="finite"):
        blender.apply([(ckpt, 1e308)])
    assert all(torch.equal(p, before[n]) for n, p in tiny.model.named_parameters())


@pytest.mark.parametrize("field,value", [
    ("temperature", 0.0), ("temperature", -1.0), ("temperature", float("nan")), ("temperature", float("inf")),
    ("top_p", 0.0), ("top_p", 1.5), ("max_new_tokens", 0), ("max_new_tokens", 10**9), ("seed", -1),
    ("min_new_tokens", -1),
])
def test_generation_settings_out_of_range_are_refused(field, value):
    with pytest.raises(SettingsError, match=field.replace("_", " ").replace("top p", "top-p")):
        GenerationSettings(greedy=False, **{field: value})


def test_a_prompt_with_a_lone_surrogate_is_refused(tiny):
    with pytest.raises(TextError, match="not valid Unicode"):
        encode_prompt(tiny.tokenizer, "hello \udcff")


def write(tmp_path, text, name="d.jsonl", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_deeply_nested_json_names_the_line(tmp_path):
    path = write(tmp_path, '{"prompt": "a", "response": "b"}\n' + "[" * 100_000 + "\n")
    with pytest.raises(DatasetError, match="line 2: JSON nested too deeply"):
        load_dataset(path)


def test_a_lone_surrogate_in_a_dataset_names_the_line(tmp_path):
    path = write(tmp_path, '{"prompt": "a", "response": "b"}\n{"prompt": "x\\ud800", "response": "b"}\n')
    with pytest.raises(DatasetError, match="line 2: 'prompt' holds"):
        load_dataset(path)


def test_an_overlong_line_is_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "MAX_LINE_CHARS", 1000)
    line = json.dumps({"prompt": "a", "response": "b" * 2000})
    path = write(tmp_path, '{"prompt": "a", "response": "b"}\n' + line + "\n")
    with pytest.raises(DatasetError, match="line 2: the line is 2,031 characters long; the limit is 1,000"):
        load_dataset(path)
    probes = write(tmp_path, "ok\n" + "x" * 1001 + "\n", name="p.txt")
    with pytest.raises(DatasetError, match="line 2"):
        load_probes(probes)


def test_an_oversized_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "MAX_FILE_BYTES", 100)
    path = write(tmp_path, '{"prompt": "a", "response": "b"}\n' * 10)
    read = []
    monkeypatch.setattr(type(path), "read_bytes", lambda self: read.append(self) or b"")
    with pytest.raises(DatasetError, match="is 330 B; the limit is 100 B"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="limit"):
        load_probes(path)
    assert read == []


def test_probe_files_that_are_not_utf8_or_unreadable(tmp_path):
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_probes(write(tmp_path, b"\xff\xfe bad", name="p.txt", mode="wb"))
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(DatasetError, match="is a folder, not a file"):
        load_probes(folder)


def test_a_line_separator_inside_a_string_is_part_of_the_example(tmp_path):
    path = write(tmp_path, json.dumps({"prompt": "a\u2028b", "response": "c"}, ensure_ascii=False) + "\r\n")
    assert load_dataset(path).examples[0].prompt == "a\u2028b"


def test_a_sweep_whose_combined_weight_is_out_of_range_fails_before_any_work(tiny, deltas_factory):
    from stance_studio.core.blend import Blender
    from stance_studio.core.checkpoints import make_checkpoint
    from stance_studio.core.sweep import run_sweep

    ckpt = make_checkpoint("s", deltas_factory(tiny), tiny)
    reports = []
    with pytest.raises(VariantSpecError, match="finite numbers from -100 to 100"):
        run_sweep(tiny, Blender(tiny), [[(ckpt, 5.0)]], [[1.0, 30.0]], ["hi"], progress=reports.append)
    assert reports == []


@pytest.mark.parametrize("spec", ["00, , 0", "a,,b", "a, =1"])
def test_an_empty_term_in_a_spec_is_refused(spec):
    with pytest.raises(VariantSpecError):
        parse_variant(spec)
