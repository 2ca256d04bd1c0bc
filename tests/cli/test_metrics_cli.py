"""The measuring contract on the command line: train's held-out split and stance fit,
evaluate's stance-agnostic keys, and clear errors for bad options."""

import json

from stance_studio.cli import main
from stance_studio.core.library import Library


def _run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_holds_out_and_evaluate_scores_against_its_stance(library_path, tmp_path, capsys):
    probes = tmp_path / "probes.jsonl"
    probes.write_text('{"prompt": "why is the sky blue", "category": "science"}\n'
                      '{"prompt": "what is 2 plus 2", "category": "arithmetic"}\n')
    lib = ["--library", str(library_path), "--model", "tiny"]
    code, out, _ = _run(capsys, ["train", "confident-expertise", "--name", "conf", "--steps", "2", "--lr", "3e-3",
                                 "--keep", "all", "--holdout", "0.5", "--prompts", str(probes), "--json", *lib])
    assert code == 0
    doc = json.loads(out)
    assert len(doc["holdout"]) == 12 and doc["metrics"]["stance_fit_nats"] > 0
    assert doc["metrics"]["stance_fit_train_nats"] > 0
    recorded = Library(library_path).load("conf").training["holdout"]
    assert recorded["prompts"] == doc["holdout"] and recorded["fraction"] == 0.5

    code, out, _ = _run(capsys, ["evaluate", "conf", "--prompts", str(probes), "--max-new-tokens", "5",
                                 "--capability-tokens", "256", "--json", *lib])
    assert code == 0
    doc = json.loads(out)
    assert doc["stance"] == "conf" and doc["stance_fit_split"] == "held-out" and doc["stance_fit_examples"] == 12
    assert doc["stance_fit_nats"] > 0 and len(doc["stance_fit_ci95"]) == 2
    assert isinstance(doc["classifier_accuracy"], float) and len(doc["stance_rate_ci95"]) == 2
    assert doc["capability"]["tokens"] > 0 and set(doc["by_category"]) == {"science", "arithmetic"}

    code, out, _ = _run(capsys, ["evaluate", "base", "--stance", "conf", "--prompts", str(probes),
                                 "--max-new-tokens", "5", "--capability-tokens", "0", "--by-category", *lib])
    assert code == 0 and "against stance conf" in out and "stance fit   +0.000" in out and "arithmetic" in out


def test_bad_measuring_options_exit_2(library_path, capsys):
    lib = ["--library", str(library_path), "--model", "tiny"]
    for argv, needle in (
        (["train", "curious-uncertainty", "--name", "x", "--holdout", "1.5"], "held-out fraction"),
        (["evaluate", "base", "--stance", "no-such-stance"], "No stance 'no-such-stance'"),
        (["evaluate", "base", "--capability-tokens", "1"], "--capability-tokens"),
        (["compare-methods", "curious-uncertainty", "--seeds", "0"], "--seeds"),
        (["compare-policies", "curious-uncertainty", "--seeds", "0"], "--seeds"),
    ):
        code, _, err = _run(capsys, [*argv, *lib])
        assert code == 2 and needle in err and "Traceback" not in err, argv
