import pytest

from stance_studio.core.errors import Cancelled, PolicyError
from stance_studio.core.experiments import compare_methods, compare_policies, parse_policies
from stance_studio.core.jobs import CancelFlag, MeasuredRow
from stance_studio.core.training import TrainConfig

PROBES = ["why is the sky blue", "how do bees make honey"]


def test_compare_methods_rows(tiny):
    methods = [("full", TrainConfig(steps=2, lr=1e-2)),
               ("lora", TrainConfig(method="lora", steps=2, lr=1e-1)),
               ("diverges", TrainConfig(lr=1e6, grad_clip=1e30, steps=10))]
    reported = []
    result = compare_methods(tiny, "curious-uncertainty", methods, probes=PROBES,
                             progress=lambda p: reported.append(p.partial.row) if isinstance(p.partial, MeasuredRow) else None)
    rows = result.rows
    assert [r["method"] for r in rows] == ["base", "full", "lora", "diverges"]
    # the one result shape: rows, the seed's run, and the JSON body the CLI prints
    assert result.kind == "methods" and result.runs == [{"seed": 0, "rows": rows}] and result["rows"] is rows
    assert set(result.as_json()) == {"experiment", "seeds", "rows", "runs"} and result.seeds == 1
    assert result.errors() == [f"diverges: {rows[3]['error']}"] and "3 methods measured" in result.summary()
    assert result.markdown().count("\n") == len(rows) + 2 and result.csv().startswith("method,")
    # every row is reported as soon as it is measured, in order
    assert reported == rows
    assert rows[0]["identical_fraction"] == 1.0 and rows[0]["kl_to_base"] == pytest.approx(0.0, abs=1e-6)
    for row in rows[1:3]:
        for key in ("trainable_params", "seconds", "nonfinite_steps", "bytes", "stance_score", "kl_to_base",
                    "identical_fraction"):
            assert row[key] is not None, key
    assert rows[2]["trainable_params"] < rows[1]["trainable_params"]
    # the stance-agnostic figures: base scores no fit and no capability cost against its own stance
    assert rows[0]["stance_fit_nats"] == pytest.approx(0.0, abs=1e-6) and rows[0]["capability_change"] == 0.0
    assert rows[1]["stance_fit_nats"] > 0 and len(rows[1]["stance_fit_nats_ci95"]) == 2
    assert 0.0 <= rows[1]["stance_rate"] <= 1.0 and rows[1]["classifier_accuracy"] is not None
    assert "diverged" in rows[3]["error"].lower() and rows[3]["stance_score"] is None


def test_compare_methods_has_a_steering_row(tiny):
    from stance_studio.core.experiments import report_methods
    from stance_studio.core.steering_build import SteerConfig

    assert any(isinstance(config, SteerConfig) for _, config in report_methods(tiny.num_layers))
    rows = compare_methods(tiny, "curious-uncertainty", [("steering", SteerConfig(max_new_tokens=4, band="0.3-0.8"))],
                           probes=PROBES[:1]).rows
    assert [r["method"] for r in rows] == ["base", "steering"]
    row = rows[1]
    assert row["trainable_params"] == 0 and row["bytes"] == 4 * 32 * 4 and row["seconds"] > 0
    assert row["kl_to_base"] > 0  # the vectors change the model's predictions


def test_compare_policies_measures_size_against_retention(tiny):
    before = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    rows_seen = []
    result = compare_policies(tiny, "curious-uncertainty", ["all", "rank:1", "top:1"],
                              TrainConfig(steps=3, lr=1e-2), probes=PROBES,
                              progress=lambda p: rows_seen.append(p.partial.row) if isinstance(p.partial, MeasuredRow) else None)
    rows = {r["policy"]: r for r in result["rows"]}
    assert list(rows) == ["all", "rank:1", "top:1"] and rows_seen == result["rows"]
    # the same result shape as the methods' (README's --json keys kept)
    assert result.kind == "policies" and result.rows is result["rows"] and result.seeds == 1
    assert {"experiment", "seeds", "rows", "runs", "training", "base_model_bytes"} == set(result.as_json())
    assert result.runs[0]["training"] is result.training and result.runs[0]["seed"] == 0
    # the whole delta reproduces the tuned model; anything less is smaller
    assert rows["all"]["retention"] == pytest.approx(1.0, abs=1e-4)
    assert rows["rank:1"]["bytes"] < rows["all"]["bytes"] and rows["top:1"]["modules"] == 1
    assert rows["all"]["fraction_of_base"] == pytest.approx(rows["all"]["bytes"] / tiny.parameter_bytes())
    assert result["training"]["steps"] == 3 and result["training"]["ll_tuned"] > result["training"]["ll_base"]
    # the base model is untouched
    for name, p in tiny.model.named_parameters():
        assert __import__("torch").equal(p.detach(), before[name]), name


def test_compare_policies_cancel_and_bad_policy(tiny):
    with pytest.raises(PolicyError, match="rank:x"):
        parse_policies(["all", "rank:x"])
    assert parse_policies(["rank:4", " RANK:4 ", "all"]) == ["rank:4", "all"]
    flag = CancelFlag()
    flag.set()
    with pytest.raises(Cancelled):
        compare_policies(tiny, "curious-uncertainty", ["all"], TrainConfig(steps=2), probes=PROBES, cancel=flag)


def test_a_policy_that_cannot_fit_is_a_failed_row_not_a_failed_sweep(tiny):
    result = compare_policies(tiny, "curious-uncertainty", ["budget:0.001", "rank:1"], TrainConfig(steps=3, lr=1e-2),
                              probes=PROBES)
    budget, rank1 = result["rows"]
    assert "budget" in budget["error"] and budget["retention"] is None
    assert rank1["retention"] is not None and "error" not in rank1


def test_compare_methods_over_seeds_reports_mean_and_spread(tiny):
    from stance_studio.core.seeds import compare_methods_seeds

    result = compare_methods_seeds(tiny, "curious-uncertainty", seeds=2, seed=5, probes=PROBES[:1],
                                   methods=[("full", TrainConfig(steps=2, lr=1e-2))], capability_tokens=128)
    assert [run["seed"] for run in result["runs"]] == [5, 6]
    full = {r["method"]: r for r in result["rows"]}["full"]
    per_seed = [next(r for r in run["rows"] if r["method"] == "full")["stance_fit_nats"] for run in result["runs"]]
    assert full["seeds"] == 2 and full["stance_fit_nats"] == pytest.approx(sum(per_seed) / 2)
    assert full["stance_fit_nats_spread"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5)
    assert per_seed[0] != per_seed[1]  # another seed: another split and example order
