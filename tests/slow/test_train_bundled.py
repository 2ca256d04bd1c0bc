"""End-to-end on the bundled model, through the command line the way a researcher
runs it: ``train`` a shipped stance with the defaults, then ``evaluate`` base and
the new checkpoint on the neutral probes (DESIGN.md's metrics)."""

import json

import pytest
import torch

import stance_studio.cli.common as common
from stance_studio.cli import main
from stance_studio.core.library import Library

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(bundled, monkeypatch, tmp_path, capsys):
    """Run ``stance-studio ... --json`` in-process on the session's bundled model
    (no reload per command) and return the JSON document."""
    monkeypatch.setattr(common, "load_model", lambda args, cancel=None: bundled)
    library = tmp_path / "library"

    def run(*argv):
        code = main([*argv, "--library", str(library), "--json"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return json.loads(captured.out)

    run.library = library
    return run


def test_default_training_shifts_the_stance_on_unseen_prompts(cli, bundled):
    snapshot = {n: p.detach().clone() for n, p in bundled.model.named_parameters()}

    trained = cli("train", "curious-uncertainty", "--name", "curious")
    base = cli("evaluate", "base")
    curious = cli("evaluate", "curious")

    # the checkpoint: every step finite, small, and close to the fully tuned model
    assert trained["nonfinite_steps"] == 0 and len(trained["loss"]) == trained["steps"]
    assert trained["loss"][-1] < trained["loss"][0]
    assert trained["bytes"] <= 0.02 * bundled.parameter_bytes()
    assert trained["metrics"]["retention"] >= 0.9
    assert Library(cli.library).names() == ["curious"]

    # the behaviour: more hedging than base on prompts it never saw, and different answers
    assert curious["stance_score"] > base["stance_score"]
    assert curious["identical_fraction"] < 0.5
    assert curious["kl_to_base"] > base["kl_to_base"] == 0.0
    assert base["identical_fraction"] == 1.0

    # training, extraction and evaluation leave the base weights bit for bit
    for name, p in bundled.model.named_parameters():
        assert torch.equal(p.detach(), snapshot[name]), name
