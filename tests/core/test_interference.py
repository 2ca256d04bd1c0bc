import pytest
import torch

from stance_studio.core.deltas import DenseDelta, LowRankDelta
from stance_studio.core.errors import ShapeMismatchError
from stance_studio.core.interference import interference


def _negated(deltas):
    return {n: LowRankDelta(A=d.A, B=-d.B) if isinstance(d, LowRankDelta) else DenseDelta(-d.tensor)
            for n, d in deltas.items()}


@pytest.mark.parametrize("rank", [None, 2])
def test_a_stance_with_itself_and_with_its_negation(tiny, deltas_factory, rank):
    a = deltas_factory(tiny, rank=rank, include_norm=True)
    same = interference(a, a)
    assert same.overall.cosine == pytest.approx(1.0, abs=1e-9)
    assert same.overall.sign_conflict == 0.0
    assert all(r.cosine == pytest.approx(1.0, abs=1e-9) and r.sign_conflict == 0.0 for r in same.layers)
    neg = interference(a, _negated(a))
    assert neg.overall.cosine == pytest.approx(-1.0, abs=1e-9)
    assert neg.overall.sign_conflict == 1.0
    assert [r.layer for r in neg.layers] == list(range(tiny.num_layers))
    assert all(r.cosine == pytest.approx(-1.0, abs=1e-9) and r.sign_conflict == 1.0 for r in neg.layers)


def test_unrelated_stances_are_near_orthogonal_and_disagree_half_the_time(tiny, deltas_factory):
    a = deltas_factory(tiny, seed=1)
    b = deltas_factory(tiny, seed=2)
    result = interference(a, b)
    assert abs(result.overall.cosine) < 0.05
    assert 0.45 < result.overall.sign_conflict < 0.55


def test_low_rank_matches_the_dense_computation(tiny, deltas_factory):
    a = deltas_factory(tiny, rank=3, seed=1)
    b = deltas_factory(tiny, rank=2, seed=2)
    b = {n: (d if i % 2 else DenseDelta(d.materialize())) for i, (n, d) in enumerate(b.items())}
    dense_a = {n: DenseDelta(d.materialize()) for n, d in a.items()}
    dense_b = {n: DenseDelta(d.materialize()) for n, d in b.items()}
    low, dense = interference(a, b), interference(dense_a, dense_b)
    for x, y in zip(low.parameters, dense.parameters):
        manual = torch.nn.functional.cosine_similarity(dense_a[x.name].tensor.flatten(), dense_b[x.name].tensor.flatten(), dim=0)
        assert x.cosine == pytest.approx(float(manual), abs=1e-5)
        assert y.cosine == pytest.approx(float(manual), abs=1e-5)
        assert x.sign_conflict == pytest.approx(y.sign_conflict, abs=1e-3)


def test_parameters_touched_by_one_stance_count_as_zero_in_the_other(tiny, deltas_factory):
    q = deltas_factory(tiny, kinds=("q_proj",))
    qv = {**q, **deltas_factory(tiny, kinds=("v_proj",), seed=5)}
    result = interference(q, qv)
    # the v_proj part is orthogonal to nothing q has: the cosine is the share of norm q holds
    norm_q2 = sum(float(d.tensor.norm() ** 2) for d in q.values())
    norm_qv2 = sum(float(d.tensor.norm() ** 2) for d in qv.values())
    assert result.overall.cosine == pytest.approx(norm_q2 / (norm_q2 * norm_qv2) ** 0.5, rel=1e-6)
    assert result.overall.sign_conflict == 0.0
    v_rows = [r for r in result.parameters if "v_proj" in r.name]
    assert v_rows and all(r.cosine is None and r.sign_conflict is None and r.shared_weights == 0 for r in v_rows)


def test_shape_mismatch_is_refused(tiny, deltas_factory):
    a = deltas_factory(tiny, kinds=("q_proj",))
    name = next(iter(a))
    with pytest.raises(ShapeMismatchError, match=name):
        interference(a, {name: DenseDelta(torch.ones(3, 3))})


def test_a_steering_stance_is_refused_by_name_not_reported_as_unrelated(tiny, deltas_factory):
    """A steering stance has no weight delta: comparing it used to print an empty
    table ("cosine – over 0 weights") as if the stances simply did not overlap."""
    from stance_studio.core.checkpoints import make_checkpoint
    from stance_studio.core.errors import StanceStudioError
    from stance_studio.core.interference import checkpoint_interference

    weights = make_checkpoint("w", deltas_factory(tiny, rank=2), tiny)
    steer = make_checkpoint("s", {}, tiny, training={"method": "steer"})
    steer.kind = "activation"
    steer.directions = {n: torch.ones(32) for n in range(tiny.num_layers)}
    for a, b in ((steer, weights), (weights, steer), (steer, steer)):
        with pytest.raises(StanceStudioError, match="'s' is a steering stance .* interference compares the weight deltas"):
            checkpoint_interference(a, b)
    assert checkpoint_interference(weights, weights).overall.cosine == pytest.approx(1.0)
