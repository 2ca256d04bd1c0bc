"""evaluate() with every metric: the contract keys and each figure's definition."""

import pytest

from stance_studio.core import stance_classifier as sc
from stance_studio.core.blend import Blender
from stance_studio.core.datasets import load_dataset
from stance_studio.core.generation import GenerationSettings
from stance_studio.core.holdout import split_dataset
from stance_studio.core.metrics import evaluate
from stance_studio.core.repetition import loops
from stance_studio.core.stance_reference import reference_from_dataset

PROBES = ["why is the sky blue", "how do bees make honey", "what is 7 times 8", "who was cleopatra"]
CATEGORIES = ["science", "science", "arithmetic", "history"]
SETTINGS = GenerationSettings(max_new_tokens=6)
CONTRACT = ("stance", "stance_rate", "stance_rate_ci95", "classifier_accuracy", "stance_fit_nats", "stance_fit_ci95",
            "capability", "hedges_per_100w", "boosters_per_100w", "stance_score", "kl_to_base", "identical_fraction")


def test_every_metric_with_its_definition(tiny, deltas_factory):
    data = load_dataset("confident-expertise", tiny.tokenizer)
    split = split_dataset(data, 0.25, seed=0)
    stance = reference_from_dataset(data, split.held_out_prompts)
    blender = Blender(tiny)
    deltas = deltas_factory(tiny, scale=0.05)
    m = evaluate(tiny, blender, [(deltas, 1.0)], PROBES, SETTINGS, categories=CATEGORIES, stance=stance,
                 capability_tokens=256)
    doc = m.as_json()
    assert all(key in doc for key in CONTRACT)
    assert doc["stance"] == "confident-expertise" and doc["stance_fit_split"] == "held-out"
    assert doc["stance_fit_examples"] == 6 and doc["stance_fit_train_nats"] is not None
    assert set(doc["capability"]) >= {"perplexity", "perplexity_base", "change"}
    # stance rate = the share of the variant's answers the classifier assigns to the stance
    clf = sc.stance_classifier(tiny, blender, stance, SETTINGS)
    labels = list(clf.predict([g.text for g in m.generations]))
    assert doc["stance_rate"] == pytest.approx(sum(labels) / len(labels))
    assert doc["classifier_accuracy"] == clf.accuracy
    lo, hi = doc["stance_rate_ci95"]
    assert lo <= doc["stance_rate"] <= hi
    # strict rate = answers in the stance that do not loop; looping = answers that loop
    looped = [loops(g.text) for g in m.generations]
    assert doc["looping_fraction"] == pytest.approx(sum(looped) / len(looped))
    assert doc["stance_rate_strict"] == pytest.approx(sum(bool(lab) and not lp for lab, lp in zip(labels, looped))
                                                      / len(labels))
    for key in ("kl_to_base", "stance_score", "identical_fraction"):
        lo, hi = doc[f"{key}_ci95"]
        assert lo - 1e-9 <= doc[key] <= hi + 1e-9, key
    # per category: the same definitions on each category's probes
    cats = doc["by_category"]
    assert list(cats) == ["science", "arithmetic", "history"] and sum(c["probes"] for c in cats.values()) == 4
    assert cats["arithmetic"]["stance_rate"] == labels[2]
    assert blender.is_base


def test_base_against_a_stance_has_no_fit_and_no_cost(tiny):
    stance = reference_from_dataset(load_dataset("curious-uncertainty", tiny.tokenizer))
    doc = evaluate(tiny, Blender(tiny), [], PROBES, SETTINGS, stance=stance, capability_tokens=256).as_json()
    assert doc["stance_fit_nats"] == pytest.approx(0.0, abs=1e-6) and doc["stance_fit_split"] == "all"
    assert doc["capability"]["change"] == 0.0 and doc["identical_fraction"] == 1.0


def test_without_a_stance_the_stance_keys_are_empty(tiny):
    doc = evaluate(tiny, Blender(tiny), [], PROBES[:1], SETTINGS, capability_tokens=0).as_json()
    assert doc["stance"] is None and doc["stance_rate"] is None and doc["capability"] is None
    assert "by_category" not in doc


def test_a_checkpoint_finds_its_stance_and_split_again(tiny, tmp_path, deltas_factory):
    import shutil

    from stance_studio.core.checkpoints import make_checkpoint
    from stance_studio.core.datasets import builtin_stances
    from stance_studio.core.errors import DatasetError
    from stance_studio.core.library import Library
    from stance_studio.core.stance_reference import own_stance, reference_from_checkpoint, resolve_stance

    path = tmp_path / "mine.jsonl"
    shutil.copy(builtin_stances()["confident-expertise"], path)
    data = load_dataset(path)
    split = split_dataset(data, 0.25, seed=2)
    ckpt = make_checkpoint("mine", deltas_factory(tiny), tiny,
                           stance={"dataset": str(path), "dataset_name": "mine", "dataset_hash": data.sha256},
                           training={"holdout": {"fraction": 0.25, "seed": 2, "prompts": split.held_out_prompts}})
    ref = reference_from_checkpoint(ckpt)
    assert ref.fit_split == "held-out" and ref.held_out == split.held_out and ref.trained_on == split.train.examples
    assert own_stance([(ckpt, 0.2), (deltas_factory(tiny), 1.0)]).name == "mine"
    lib = Library(tmp_path / "lib")
    lib.save(ckpt)
    assert resolve_stance("mine", lib).held_out == split.held_out  # a library name: the checkpoint's stance
    assert resolve_stance(str(path), lib).fit_split == "all"  # a dataset file: every example
    # the file changes but keeps the held-out prompts: the split still holds; the source says so
    path.write_text(path.read_text() + '{"prompt": "New?", "response": "Yes."}\n')
    ref = reference_from_checkpoint(ckpt)
    assert ref.fit_split == "held-out" and "changed since training" in ref.source
    path.unlink()
    with pytest.raises(DatasetError, match="no longer exists"):
        reference_from_checkpoint(ckpt)
    assert own_stance([(ckpt, 1.0)], strict=False) is None
