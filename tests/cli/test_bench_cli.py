import json
import math

import pytest
import torch

from stance_studio.cli import main
from stance_studio.core.bench import BENCHMARKS, bench_extraction
from stance_studio.core.tiny import tiny_base


@pytest.fixture
def one_thread():
    """Two loops compared on a shared machine: one thread each keeps the test quick."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _is_figure(fig: dict) -> bool:
    return (isinstance(fig.get("baseline"), str) and fig["baseline_value"] > 0 and fig["value"] > 0
            and math.isclose(fig["ratio"], fig["baseline_value"] / fig["value"])
            and isinstance(fig["meets_target"], bool) and fig["target"])


def test_bench_on_the_tiny_model_reports_every_figure(one_thread, capsys):
    assert main(["bench", "--model", "tiny", "--json", "--repeats", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)  # stdout holds the JSON document and nothing else
    assert set(doc) == set(BENCHMARKS)
    for name, fig in doc.items():
        assert _is_figure(fig) or (set(fig) == {"skipped"} and fig["skipped"]), name
    assert "GGUF" in doc["cached_reload"]["skipped"]  # the tiny model is built in code
    for name in ("blend_apply", "side_by_side", "runtime_generation", "training_step", "training_memory"):
        assert _is_figure(doc[name]), name
    memory = doc["training_memory"]
    assert memory["unit"] == "bytes" and 0 <= memory["added_bytes"] <= memory["value"] < 4.5e9
    # 2 % of the tiny model is ~4 kB, less than a checkpoint's metadata
    assert "budget:0.02" in doc["extraction"]["skipped"]


def test_extraction_figure_measures_the_file_against_the_full_delta(one_thread):
    fig = bench_extraction("tiny", policy="rank:2+fp16")
    assert _is_figure(fig) and fig["unit"] == "bytes" and fig["ratio"] > 1
    assert fig["share_of_base"] == pytest.approx(fig["value"] / tiny_base().parameter_bytes())
    assert fig["retention"] is None or fig["retention"] < 1.5
