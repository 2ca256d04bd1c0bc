import pytest

from stance_studio.core.datasets import Example, StanceDataset, load_dataset
from stance_studio.core.errors import DatasetError
from stance_studio.core.holdout import examples_for_prompts, held_out_count, split_dataset


def _dataset(n):
    return StanceDataset("d", None, [Example(f"p{i}", f"r{i}") for i in range(n)], "sha")


def test_default_split_holds_out_a_quarter_at_least_two():
    assert held_out_count(24, 0.25) == 6 and held_out_count(5, 0.25) == 2 and held_out_count(24, 0) == 0
    split = split_dataset(load_dataset("curious-uncertainty"))
    assert len(split.held_out) == 6 and len(split.train) == 18
    prompts = {ex.prompt for ex in split.train.examples}
    assert not prompts & set(split.held_out_prompts)  # nothing held out is trained on


def test_split_is_seeded():
    data = _dataset(24)
    assert split_dataset(data, 0.25, seed=3).held_out_prompts == split_dataset(data, 0.25, seed=3).held_out_prompts
    assert split_dataset(data, 0.25, seed=3).held_out_prompts != split_dataset(data, 0.25, seed=4).held_out_prompts


def test_no_holdout_and_too_small_datasets():
    assert split_dataset(_dataset(3), 0).held_out == []
    assert len(split_dataset(_dataset(3), 0.25).train) == 1
    with pytest.raises(DatasetError, match="too few"):
        split_dataset(_dataset(2), 0.25)
    with pytest.raises(DatasetError, match="has 1 example: too few to hold out 2"):
        split_dataset(_dataset(1), 0.25)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(DatasetError, match="held-out fraction"):
            split_dataset(_dataset(10), bad)


def test_a_recorded_split_is_found_again():
    data = _dataset(10)
    split = split_dataset(data, 0.3, seed=1)
    held, rest = examples_for_prompts(data, split.held_out_prompts)
    assert held == split.held_out and rest == split.train.examples


def test_examples_that_share_a_prompt_are_held_out_together():
    """The split was drawn over examples: one copy of a repeated prompt could be held
    out while another was trained on, so stance fit "on held-out examples" measured
    training data, and the recorded prompts found training examples again."""
    examples = [Example(f"p{i % 4}", f"r{i}") for i in range(12)]  # 4 prompts, 3 answers each
    data = StanceDataset("d", None, examples, "sha")
    for seed in range(10):
        split = split_dataset(data, 0.25, seed=seed)
        held = set(split.held_out_prompts)
        assert len(held) == 2 and len(split.held_out) == 6  # two prompts, all three answers of each
        assert not held & {ex.prompt for ex in split.train.examples}
        assert examples_for_prompts(data, split.held_out_prompts)[0] == split.held_out
    same = StanceDataset("d", None, [Example("p", f"r{i}") for i in range(5)], "sha")
    with pytest.raises(DatasetError, match=r"has 5 examples \(1 distinct prompt\): too few to hold out 2"):
        split_dataset(same, 0.25)
    assert len(split_dataset(same, 0).train) == 5


def test_a_dataset_without_repeated_prompts_splits_as_before():
    """Checkpoints record their split; drawing over distinct prompts keeps every
    earlier split of a dataset without repeats the same."""
    import random

    data = _dataset(24)
    chosen = set(random.Random(3).sample(range(24), 6))
    assert split_dataset(data, 0.25, seed=3).held_out_prompts == [f"p{i}" for i in sorted(chosen)]
