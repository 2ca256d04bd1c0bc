import json

from stance_studio.cli import main


def _run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_json_then_list_and_evaluate(library_path, tmp_path, capsys):
    probes = tmp_path / "probes.txt"
    probes.write_text("# two probes\nwhy is the sky blue\nhow do bees make honey\n")
    lib = ["--library", str(library_path), "--model", "tiny"]
    code, out, _ = _run(capsys, ["train", "curious-uncertainty", "--name", "curious", "--steps", "2",
                                 "--keep", "rank:4+fp16", "--prompts", str(probes), "--json", *lib])
    assert code == 0
    doc = json.loads(out)
    assert doc["checkpoint"].endswith("curious.stance.safetensors") and doc["steps"] == 2
    assert len(doc["loss"]) == 2 and doc["nonfinite_steps"] == 0 and doc["bytes"] > 0
    assert "retention" in doc["metrics"] and doc["seconds"] > 0
    # seconds: the training steps; metrics.seconds_total: the whole run, split by phase
    phases = doc["metrics"]["seconds_phases"]
    assert doc["metrics"]["seconds_total"] >= doc["seconds"] == phases["training_steps"]
    assert {"extraction", "measuring", "measuring_answers", "measuring_retention", "measuring_fit"} <= set(phases)

    code, out, _ = _run(capsys, ["evaluate", "curious", "--prompts", str(probes), "--max-new-tokens", "6", "--json", *lib])
    assert code == 0
    doc = json.loads(out)
    for key in ("hedges_per_100w", "boosters_per_100w", "stance_score", "kl_to_base", "identical_fraction"):
        assert isinstance(doc[key], float), key

    code, out, _ = _run(capsys, ["evaluate", "base", "--prompts", str(probes), "--max-new-tokens", "6", "--json", *lib])
    assert json.loads(out)["identical_fraction"] == 1.0


def test_train_with_bad_dataset_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    code, _, err = _run(capsys, ["train", str(bad), "--name", "x", "--model", "tiny"])
    assert code == 2 and "bad.jsonl" in err and "line 1" in err and "Traceback" not in err


def test_train_with_bad_policy_or_module_exits_2(capsys):
    code, _, err = _run(capsys, ["train", "curious-uncertainty", "--name", "x", "--model", "tiny", "--keep", "rank:zero"])
    assert code == 2 and "rank:zero" in err
    code, _, err = _run(capsys, ["train", "curious-uncertainty", "--name", "x", "--model", "tiny",
                                 "--method", "selective", "--modules", "no_such_proj", "--steps", "1"])
    assert code == 2 and "no_such_proj" in err


def test_compare_methods_json(tmp_path, capsys, monkeypatch):
    import stance_studio.core.experiments as experiments
    from stance_studio.core.training import TrainConfig

    monkeypatch.setattr(experiments, "report_methods", lambda n: [("full", TrainConfig(steps=1)),
                                                              ("lora", TrainConfig(method="lora", steps=1))])
    probes = tmp_path / "p.txt"
    probes.write_text("why is the sky blue\n")
    code, out, _ = _run(capsys, ["compare-methods", "curious-uncertainty", "--model", "tiny", "--prompts", str(probes),
                                 "--json"])
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [r["method"] for r in rows] == ["base", "full", "lora"]
    assert {"method", "trainable_params", "seconds", "nonfinite_steps", "bytes", "stance_score", "kl_to_base",
            "identical_fraction"} <= set(rows[1])


def test_compare_policies_json(tmp_path, capsys):
    probes = tmp_path / "p.txt"
    probes.write_text("why is the sky blue\nhow do bees make honey\n")
    code, out, _ = _run(capsys, ["compare-policies", "curious-uncertainty", "--model", "tiny", "--prompts", str(probes),
                                 "--steps", "2", "--lr", "1e-2", "--keep", "all", "--keep", "rank:1", "--json"])
    assert code == 0
    doc = json.loads(out)
    assert [r["policy"] for r in doc["rows"]] == ["all", "rank:1"]
    assert doc["training"]["steps"] == 2
    full, rank1 = doc["rows"]
    assert rank1["bytes"] < full["bytes"]
    assert abs(full["retention"] - 1.0) < 1e-4


def test_compare_policies_refuses_a_bad_policy_before_loading(capsys):
    code, _, err = _run(capsys, ["compare-policies", "curious-uncertainty", "--model", "/no/such/model",
                                 "--keep", "rank:x"])
    assert code == 2 and "rank:x" in err and "Traceback" not in err


def test_the_default_budget_refuses_a_model_too_small_for_it(library_path, capsys):
    """2 % of the tiny model cannot hold a checkpoint's metadata: a clear error, no file."""
    code, _, err = _run(capsys, ["train", "curious-uncertainty", "--name", "small", "--steps", "1",
                                 "--library", str(library_path), "--model", "tiny"])
    assert code == 2 and "budget" in err and "Traceback" not in err
    assert not list(library_path.iterdir())
