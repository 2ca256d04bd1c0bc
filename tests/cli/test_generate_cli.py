import json

from stance_studio.cli import main
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.library import Library
from stance_studio.core.tiny import tiny_base


def test_columns_are_labelled_with_the_spec_as_typed(library_path, deltas_factory, capsys):
    base = tiny_base()
    Library(library_path).save(make_checkpoint("cu", deltas_factory(base, scale=0.5), base))
    specs = ["base", "cu", "cu=0.5", "cu = -1"]
    argv = ["generate", "--prompt", "hello there", "--max-new-tokens", "4", "--model", "tiny",
            "--library", str(library_path), "--json"]
    for spec in specs:
        argv += ["--variant", spec]
    assert main(argv) == 0
    columns = json.loads(capsys.readouterr().out)["columns"]
    assert [c["variant"] for c in columns] == specs
    # with no --variant: base, then every compatible stance under its own name
    assert main(argv[: argv.index("--variant")]) == 0
    assert [c["variant"] for c in json.loads(capsys.readouterr().out)["columns"]] == ["base", "cu"]


def test_json_columns_carry_the_side_by_side_metrics(library_path, deltas_factory, capsys):
    base = tiny_base()
    Library(library_path).save(make_checkpoint("cu", deltas_factory(base, scale=0.5), base))
    argv = ["generate", "--prompt", "hello there", "--max-new-tokens", "6", "--model", "tiny",
            "--library", str(library_path), "--json", "--variant", "cu", "--variant", "base"]
    assert main(argv) == 0
    stance, plain = json.loads(capsys.readouterr().out)["columns"]
    for column in (stance, plain):
        assert {"text", "kl_to_base", "stance_score", "hedges_per_100w", "boosters_per_100w",
                "identical_to_base", "new_tokens"} <= set(column)
    assert plain["kl_to_base"] == 0.0 and plain["identical_to_base"] is True
    assert stance["kl_to_base"] > 0.0 and stance["identical_to_base"] is False


def test_each_stance_reads_the_answers_unless_told_not_to(library_path, deltas_factory, capsys):
    from stance_studio.core.datasets import builtin_stances, load_dataset

    base = tiny_base()
    path = builtin_stances()["confident-expertise"]
    data = load_dataset(path)
    Library(library_path).save(make_checkpoint("ce", deltas_factory(base, scale=0.5), base, stance={
        "dataset": str(path), "dataset_name": data.name, "dataset_hash": data.sha256}))
    argv = ["generate", "--prompt", data.examples[0].prompt, "--model", "tiny", "--library", str(library_path),
            "--variant", "base", "--variant", "ce"]
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["stance"] for s in doc["stances"]] == ["ce"] and doc["notes"] == []
    assert all(0.0 <= c["stance_probability"]["ce"] <= 1.0 for c in doc["columns"])
    assert main(argv) == 0
    assert "reads as ce" in capsys.readouterr().out
    assert main([*argv, "--json", "--no-stances"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["stances"] == [] and all(c["stance_probability"] == {} for c in doc["columns"])
