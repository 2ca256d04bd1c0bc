"""Checkpoints with tensors or metadata the app cannot use are listed as invalid with
the reason, and never break the rest of the library."""

import json

import pytest
import torch
from safetensors.torch import save_file

from stance_studio.core.checkpoints import FORMAT, make_checkpoint
from stance_studio.core.library import Library

Q = "model.layers.0.self_attn.q_proj.weight"


def write(folder, name, tensors, **metadata):
    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    save_file(tensors, str(folder / f"{name}.stance.safetensors"), metadata=meta)


BAD_TENSORS = {
    "float8": ({f"{Q}:delta": torch.zeros(32, 32, dtype=torch.float8_e4m3fn)}, "stored as F8_E4M3"),
    "integers": ({f"{Q}:delta": torch.zeros(32, 32, dtype=torch.int64)}, "stored as I64"),
    "bool": ({f"{Q}:A": torch.zeros(2, 32, dtype=torch.bool), f"{Q}:B": torch.zeros(32, 2)}, "stored as BOOL"),
    "zero-rank": ({f"{Q}:A": torch.zeros(0, 32), f"{Q}:B": torch.zeros(32, 0)}, "zero-rank factor"),
    "empty": ({f"{Q}:delta": torch.zeros(0, 32)}, "empty tensor"),
    "scalar": ({f"{Q}:delta": torch.tensor(1.0)}, "is a scalar"),
}
BAD_METADATA = {
    "loss text": ({"training": {"method": "full", "loss": "1,2,3"}}, "training.loss must be a list"),
    "loss with text": ({"training": {"loss": [1.0, "x"]}}, "training.loss must be a list"),
    "retention text": ({"metrics": {"retention": "high"}}, "metrics.retention must be a finite number"),
    "retention nan": ({"metrics": {"retention": float("nan")}}, "metrics.retention must be a finite number"),
    "method list": ({"training": {"method": ["full"]}}, "training.method must be a string"),
    "layers text": ({"base": {"model": "tiny", "num_layers": "4"}}, "base.num_layers must be an integer"),
    "seconds bool": ({"training": {"seconds": True}}, "training.seconds must be a finite number"),
    "model number": ({"base": {"model": 5}}, "base.model must be a string"),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_unusable_tensors_are_listed_invalid_with_the_reason(tmp_path, case):
    tensors, reason = BAD_TENSORS[case]
    write(tmp_path, "bad", tensors)
    entries, problems = Library(tmp_path).scan()
    assert entries == []
    assert len(problems) == 1 and reason in problems[0].message and "bad.stance.safetensors" in problems[0].message


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_metadata_of_the_wrong_type_is_listed_invalid_with_the_reason(tmp_path, case):
    metadata, reason = BAD_METADATA[case]
    write(tmp_path, "bad", {f"{Q}:delta": torch.zeros(32, 32)}, **metadata)
    entries, problems = Library(tmp_path).scan()
    assert entries == [] and len(problems) == 1 and reason in problems[0].message


def test_unaddressable_file_names_are_listed_invalid(tiny, deltas_factory, tmp_path):
    lib = Library(tmp_path)
    path = lib.save(make_checkpoint("good", deltas_factory(tiny), tiny))
    for odd in ("a,b", "x=1", "base", " pad"):
        (tmp_path / f"{odd}.stance.safetensors").write_bytes(path.read_bytes())
    entries, problems = lib.scan()
    assert [e.name for e in entries] == ["good"]
    assert len(problems) == 4 and all("file name" in p.message for p in problems)


def test_generate_skips_broken_checkpoints_and_runs_the_rest(tiny, deltas_factory, tmp_path, capsys):
    """A library holding invalid files (and a file whose values are NaN, found only when
    its tensors are read) still generates for base and every good stance."""
    from stance_studio.cli import main
    lib = Library(tmp_path)
    lib.save(make_checkpoint("good", deltas_factory(tiny, scale=0.5), tiny))
    for case, (tensors, _) in BAD_TENSORS.items():
        write(tmp_path, case, tensors)
    write(tmp_path, "retention-text", {f"{Q}:delta": torch.zeros(32, 32)}, metrics={"retention": "x"})
    nan = make_checkpoint("nan", deltas_factory(tiny), tiny)
    lib.save(nan)
    good_file = tmp_path / "nan.stance.safetensors"
    from safetensors import safe_open

    with safe_open(str(good_file), framework="pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    first = sorted(tensors)[0]
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    save_file(tensors, str(good_file), metadata=meta)
    code = main(["generate", "--prompt", "hi", "--max-new-tokens", "3", "--model", "tiny", "--library", str(tmp_path), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert [c["variant"] for c in json.loads(out.out)["columns"]] == ["base", "good"]
    assert "nan.stance.safetensors" in out.err and "float8.stance.safetensors" in out.err
