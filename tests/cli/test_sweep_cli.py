import json

import pytest

from stance_studio.cli import main
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.deltas import DenseDelta
from stance_studio.core.library import Library
from stance_studio.core.tiny import tiny_base


@pytest.fixture
def lib(library_path, tmp_path, deltas_factory):
    base = tiny_base()
    library = Library(library_path)
    a = deltas_factory(base, scale=0.3, seed=1)
    library.save(make_checkpoint("a", a, base))
    library.save(make_checkpoint("b", deltas_factory(base, kinds=("v_proj",), rank=2, scale=0.3, seed=2), base))
    library.save(make_checkpoint("neg-a", {n: DenseDelta(-d.tensor) for n, d in a.items()}, base))
    probes = tmp_path / "probes.txt"
    probes.write_text("why is the sky blue\nhow do bees make honey\n")
    return ["--model", "tiny", "--library", str(library_path), "--prompts", str(probes), "--max-new-tokens", "4"]


def _run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sweep_json_rows_carry_alpha_and_every_metric(lib, capsys):
    code, out, _ = _run(capsys, ["sweep", "a", "--alpha", "-1:1:1", "--json", *lib])
    assert code == 0
    doc = json.loads(out)
    assert doc["axes"] == ["alpha"] and doc["weights"] == [[-1.0, 0.0, 1.0]]
    rows = doc["rows"]
    assert [r["alpha"] for r in rows] == [-1.0, 0.0, 1.0]
    for key in ("stance_score", "kl_to_base", "identical_fraction", "hedges_per_100w", "boosters_per_100w"):
        assert all(isinstance(r[key], float) for r in rows), key
    assert rows[1]["kl_to_base"] == pytest.approx(0.0, abs=1e-6) and rows[0]["kl_to_base"] > 0 and rows[2]["kl_to_base"] > 0


def test_sweep_of_a_blend_and_the_readable_table(lib, capsys):
    code, out, _ = _run(capsys, ["sweep", "a=1,b=-0.5", "--alpha", "0,2", *lib])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("a=1,b=-0.5 on 2 probe prompts") and "2 points" in lines[0]
    assert "α" in lines[1] and "KL to base" in lines[1]
    assert "a=2,b=-1" in out and "marker score (hedges − boosters per 100 words)" in out


def test_grid_json_shape_order_and_matrix(lib, capsys):
    code, out, _ = _run(capsys, ["sweep", "a,b", "--grid", "--alpha", "0:1:1", "--beta", "-1,0,1", "--json", *lib])
    assert code == 0
    doc = json.loads(out)
    assert doc["axes"] == ["alpha", "beta"] and doc["directions"] == ["a", "b"]
    assert [(r["alpha"], r["beta"]) for r in doc["rows"]] == [(a, b) for a in (0, 1) for b in (-1, 0, 1)]
    code, out, _ = _run(capsys, ["sweep", "a,b", "--grid", "--alpha", "0:1:1", *lib])
    assert code == 0 and "α (a) down, β (b) across" in out


@pytest.mark.parametrize("argv, needle", [
    (["sweep", "a", "--alpha", "0:1"], "'0:1'"),
    (["sweep", "a", "--alpha", "-1:1"], "'-1:1'"),
    (["sweep", "a", "--alpha", "1:0:0.5"], "lower end first"),
    (["sweep", "base"], "Sweeping base"),
    (["sweep", "a", "--grid"], "two stances"),
    (["sweep", "a", "--beta", "0,1"], "--grid"),
    (["sweep", "a", "--alpha", ""], "Weights '' name no point"),  # not the default weights in silence
    (["sweep", "a,b", "--grid", "--alpha", ""], "Weights '' name no point"),
    (["sweep", "a", "--alpha", "0:1:5e-324"], "the finest step a sweep takes is 1e-09"),
    (["sweep", "nope"], "nope"),
])
def test_bad_sweeps_exit_2_with_one_line(lib, capsys, argv, needle):
    code, out, err = _run(capsys, [*argv, *lib])
    assert code == 2 and needle in err and "Traceback" not in err and not out


def test_interference_of_a_stance_with_its_negation(lib, capsys):
    library = lib[lib.index("--library") + 1]
    code, out, _ = _run(capsys, ["interference", "a", "neg-a", "--library", library, "--json"])
    assert code == 0
    doc = json.loads(out)
    assert doc["overall"]["cosine"] == pytest.approx(-1.0) and doc["overall"]["sign_conflict"] == 1.0
    assert [r["layer"] for r in doc["layers"]] == [0, 1, 2, 3]
    code, out, _ = _run(capsys, ["interference", "a", "a", "--library", library])
    assert code == 0 and "cosine +1.000, sign conflict 0.0%" in out and "layer 3" in out
    code, out, _ = _run(capsys, ["interference", "a", "b", "--library", library, "--json"])
    doc = json.loads(out)
    # b touches only v_proj, a also q_proj: q rows have no shared weights
    assert any(r["cosine"] is None for r in doc["parameters"]) and -1 < doc["overall"]["cosine"] < 1


def test_sweep_scores_against_a_named_stance(lib, capsys):
    code, out, _ = _run(capsys, ["sweep", "a", "--alpha", "0,1", "--stance", "curious-uncertainty", "--json", *lib])
    assert code == 0
    rows = json.loads(out)["rows"]
    assert all(r["stance"] == "curious-uncertainty" and 0.0 <= r["stance_rate"] <= 1.0 for r in rows)
    code, _, err = _run(capsys, ["sweep", "a", "--stance", "no-such-stance", *lib])
    assert code == 2 and "no-such-stance" in err
