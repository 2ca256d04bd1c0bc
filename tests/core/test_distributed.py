"""`train` under torchrun: two gloo processes on the CPU give the checkpoint one
process gives on the same global batch; a cancel on one rank stops both, and only
rank 0 writes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from stance_studio.cli import main
from stance_studio.core.library import Library

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["train", "curious-uncertainty", "--name", "d", "--model", "tiny", "--steps", "3", "--lr", "3e-3",
         "--batch-size", "4", "--keep", "all", "--json"]


def torchrun(args, tmp_path, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_save_the_checkpoint_of_one(tmp_path, capsys, strategy):
    probes = tmp_path / "probes.txt"
    probes.write_text("why is the sky blue\nhow do bees make honey\n")
    common = [*TRAIN, "--prompts", str(probes)]
    assert main([*common, "--library", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    flags = ["--fsdp"] if strategy == "fsdp" else []
    run = torchrun(["-m", "stance_studio", *common, *flags, "--library", str(tmp_path / "two")], tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)  # rank 0 alone prints (one JSON document)
    assert Path(report["checkpoint"]).parent == tmp_path / "two"
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["d.stance.safetensors"]
    one, two = Library(tmp_path / "one").load("d"), Library(tmp_path / "two").load("d")
    assert two.training["parallel"] == {"processes": 2, "strategy": strategy} and "parallel" not in one.training
    assert set(one.deltas) == set(two.deltas) and len(one.deltas) > 10
    for name, delta in one.deltas.items():
        torch.testing.assert_close(two.deltas[name].materialize(), delta.materialize(), rtol=1e-3, atol=5e-5)
    torch.testing.assert_close(torch.tensor(two.training["loss"]), torch.tensor(one.training["loss"]), rtol=1e-5, atol=1e-5)


CANCEL_ON_RANK_1 = textwrap.dedent("""
    import os, sys
    from stance_studio.core.datasets import load_dataset
    from stance_studio.core.errors import Cancelled
    from stance_studio.core.jobs import CancelFlag
    from stance_studio.core.pipeline import build_stance
    from stance_studio.core.library import Library
    from stance_studio.core.tiny import tiny_base
    from stance_studio.core.training import TrainConfig

    rank = int(os.environ["RANK"])
    base = tiny_base()
    cancel = CancelFlag()
    def progress(p):
        if p.stage == "train" and p.done == 2 and rank == 1:
            cancel.set()
    try:
        build_stance(base, load_dataset("curious-uncertainty", base.tokenizer), "c", TrainConfig(steps=6, lr=1e-3),
                     library=Library(sys.argv[1]), probes=["hi"], progress=progress, cancel=cancel)
    except Cancelled as exc:
        print(f"rank {rank} stopped: {exc}")
        sys.exit(0)
    print(f"rank {rank} finished")
""")


def test_a_cancel_on_one_rank_stops_every_rank_and_nothing_is_written(tmp_path):
    script = tmp_path / "cancel_one.py"
    script.write_text(CANCEL_ON_RANK_1)
    run = torchrun([str(script), str(tmp_path / "lib")], tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rank 0 stopped" in run.stdout and "rank 1 stopped" in run.stdout and "finished" not in run.stdout
    assert not (tmp_path / "lib").exists() or not any((tmp_path / "lib").iterdir())
