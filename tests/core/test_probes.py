import json

import pytest

from stance_studio.core.datasets import builtin_stances, load_dataset, load_probes
from stance_studio.core.errors import DatasetError
from stance_studio.core.probes import RETENTION_PER_CATEGORY, load_probe_set, retention_probes

CATEGORIES = {"science", "history", "practical advice", "opinion", "arithmetic"}


def _norm(text):
    return " ".join(text.lower().split())


def test_shipped_probe_set_has_labelled_categories():
    probes = load_probe_set()
    assert len(probes) >= 100 and len(set(probes.prompts)) == len(probes)
    assert set(probes.categories) == CATEGORIES
    assert all(probes.categories.count(c) >= 20 for c in CATEGORIES)
    assert load_probes() == list(probes.prompts)


def test_no_probe_prompt_appears_in_any_shipped_dataset():
    probes = {_norm(p) for p in load_probe_set().prompts}
    for name, path in builtin_stances().items():
        data = load_dataset(path)
        assert len(data) >= 24, name
        overlap = [ex.prompt for ex in data.examples if _norm(ex.prompt) in probes]
        assert not overlap, (name, overlap)
        responses = [ex.response for ex in data.examples]
        assert len(set(responses)) == len(responses), name


def test_retention_subset_covers_every_category():
    subset = retention_probes()
    assert len(subset) == RETENTION_PER_CATEGORY * len(CATEGORIES)
    assert set(load_probe_set().subset(RETENTION_PER_CATEGORY).categories) == CATEGORIES


def test_plain_text_and_bad_probe_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("# comment\nWhy?\n\nHow?\n")
    probes = load_probe_set(txt)
    assert probes.prompts == ("Why?", "How?") and set(probes.categories) == {"uncategorised"}
    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps({"prompt": "ok", "category": "a"}) + "\n" + json.dumps({"category": "a"}) + "\n")
    with pytest.raises(DatasetError, match="line 2"):
        load_probe_set(bad)
    empty = tmp_path / "e.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(DatasetError, match="no prompts"):
        load_probe_set(empty)
    with pytest.raises(DatasetError, match="does not exist"):
        load_probe_set(tmp_path / "missing.jsonl")
