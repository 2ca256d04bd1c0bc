import pytest

from stance_studio.core.errors import Cancelled, LibraryError, TrainingDivergedError
from stance_studio.core.jobs import CancelFlag
from stance_studio.core.library import Library
from stance_studio.core.pipeline import build_stance
from stance_studio.core.training import TrainConfig

PROBES = ["why is the sky blue", "how do bees make honey"]


def test_build_stance_saves_a_measured_checkpoint(tiny, library_path):
    lib = Library(library_path)
    stages = []
    ckpt = build_stance(tiny, "curious-uncertainty", "curious", TrainConfig(steps=3, lr=3e-3), policy="all",
                        library=lib, probes=PROBES,
                        progress=lambda p: stages.append(p.stage) if p.stage not in stages else None)
    # every phase shows, in order
    assert stages == ["train", "extract", "answers", "retention", "fit", "save"]
    assert lib.names() == ["curious"]
    loaded = lib.load("curious")
    assert loaded.training["method"] == "full" and len(loaded.training["loss"]) == 3
    assert loaded.training["nonfinite_steps"] == 0 and loaded.training["seconds"] > 0
    assert loaded.stance["dataset_hash"] == ckpt.stance["dataset_hash"] and loaded.stance["description"]
    assert loaded.extraction["policy"] == "all"
    # the whole delta is kept, so the checkpoint reproduces the tuned model
    assert loaded.metrics["retention"] == pytest.approx(1.0, abs=1e-4)
    assert loaded.base["fingerprint"] == tiny.fingerprint(list(loaded.deltas))


def test_low_rank_policy_is_smaller_and_retains_less(tiny, library_path):
    lib = Library(library_path)
    ckpt = build_stance(tiny, "curious-uncertainty", "r1", TrainConfig(steps=3, lr=3e-3), policy="rank:1",
                        library=lib, probes=PROBES)
    assert ckpt.extraction["bytes"] < ckpt.training["full_delta_bytes"] / 4
    assert ckpt.metrics["retention"] < 1.0


@pytest.mark.parametrize("steps", [3, 60])
def test_budget_policy_bounds_the_whole_file(tiny, library_path, steps):
    """A byte budget holds for the file on disk: tensors, header and training record."""
    lib = Library(library_path)
    ckpt = build_stance(tiny, "curious-uncertainty", "b", TrainConfig(steps=steps, lr=1e-3), policy="budget:0.3",
                        library=lib, probes=PROBES)
    budget = 0.3 * tiny.parameter_bytes()
    size = ckpt.path.stat().st_size
    assert size <= budget
    assert ckpt.extraction["bytes"] > 0.3 * budget  # the budget is spent, not hoarded


def test_diverged_run_writes_nothing(tiny, library_path):
    lib = Library(library_path)
    with pytest.raises(TrainingDivergedError):
        build_stance(tiny, "curious-uncertainty", "bad", TrainConfig(lr=1e6, grad_clip=1e30, steps=10),
                     library=lib, probes=PROBES)
    assert list(library_path.iterdir()) == []


def test_cancelled_run_writes_nothing(tiny, library_path):
    lib = Library(library_path)
    flag = CancelFlag()

    def progress(p):
        if p.stage == "extract":
            flag.set()

    with pytest.raises(Cancelled):
        build_stance(tiny, "curious-uncertainty", "c", TrainConfig(steps=2), library=lib, probes=PROBES,
                     progress=progress, cancel=flag)
    assert list(library_path.iterdir()) == []


def test_existing_name_is_refused_before_training(tiny, library_path):
    lib = Library(library_path)
    build_stance(tiny, "curious-uncertainty", "x", TrainConfig(steps=1), policy="rank:2", library=lib, probes=PROBES)
    steps = []
    with pytest.raises(LibraryError, match="already exists"):
        build_stance(tiny, "curious-uncertainty", "x", TrainConfig(steps=1), library=lib, probes=PROBES,
                     progress=steps.append)
    assert steps == []


def test_timings_split_the_whole_run(tiny, library_path):
    """training.seconds is the steps alone; metrics.seconds_total is the whole run up to
    the save, and its phases add up to it."""
    ckpt = build_stance(tiny, "curious-uncertainty", "t", TrainConfig(steps=2, lr=3e-3), policy="rank:2",
                        library=Library(library_path), probes=PROBES)
    steps, total = ckpt.training["seconds"], ckpt.metrics["seconds_total"]
    phases = ckpt.metrics["seconds_phases"]
    assert 0 < steps < total and phases["training_steps"] == steps
    assert all(v >= 0 for v in phases.values())
    parts = ("training_steps", "preparing", "extraction", "measuring")
    assert sum(phases[k] for k in parts) == pytest.approx(total, rel=1e-6)
    detail = sum(phases[k] for k in ("measuring_answers", "measuring_retention", "measuring_fit"))
    assert detail <= phases["measuring"] + 1e-6


def test_interactive_work_gets_a_turn_between_every_phase_outside_any_stance_scope(tiny, library_path):
    """Other short work may use the loaded model at each training step and between the
    phases after it (extract, answers, retention, fit), and always finds no per-row or
    scoped stance weights in force on its thread."""
    from stance_studio.core.runtime import runtime_for

    runtime = runtime_for(tiny.model)
    cancel = CancelFlag()
    seen: list[object] = []
    cancel.between_steps_hook = lambda: seen.append(getattr(runtime._local, "state", None))
    build_stance(tiny, "curious-uncertainty", "turns", TrainConfig(steps=3, lr=3e-3), policy="rank:1",
                 library=Library(library_path), cancel=cancel, probes=PROBES)
    during_training = 2 * 3  # before each step and between its forward and backward pass
    assert len(seen) == during_training + 4  # after extraction, answers, retention and the base's fit
    assert all(state is None for state in seen)
