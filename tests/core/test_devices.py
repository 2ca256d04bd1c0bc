"""--device/--dtype: a model loads in the chosen precision, trains with float32 deltas,
and checkpoints move between float32 and bfloat16 in both directions."""

import pytest
import torch

from stance_studio.cli import main
from stance_studio.core import devices
from stance_studio.core.blend import Blender
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.datasets import load_dataset
from stance_studio.core.errors import DeviceError, OutOfMemoryError
from stance_studio.core.generation import GenerationSettings, side_by_side
from stance_studio.core.library import Library
from stance_studio.core.models import load_base
from stance_studio.core.training import TrainConfig, train

IDS = torch.tensor([[1, 7, 30, 99, 5, 42]])


def logits(base):
    with torch.no_grad():
        return base.model(IDS.to(base.device)).logits.float()


def test_auto_resolves_to_what_this_machine_has():
    placement = devices.resolve("auto", "auto")
    if torch.cuda.is_available():
        assert placement.device.type == "cuda"
    elif not devices._mps_available():
        assert placement.device == torch.device("cpu") and placement.dtype == torch.float32
    assert devices.resolve("cpu", "bf16").dtype == torch.bfloat16
    assert devices.resolve("cpu", "float16").describe() == "cpu (float16)"


@pytest.mark.parametrize("device, dtype, message", [("tpu", "auto", "Unknown device"), ("cpu", "float8", "Unknown dtype")])
def test_unknown_device_or_dtype_is_a_clear_error(device, dtype, message):
    with pytest.raises(DeviceError, match=message):
        devices.resolve(device, dtype)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_a_missing_gpu_is_refused_not_replaced_by_the_cpu(capsys):
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        load_base("tiny", device="cuda")
    assert main(["list", "--model", "tiny", "--device", "cuda"]) in (0, 2)  # list needs no model
    assert main(["inspect", "x", "--model", "tiny", "--device", "cuda"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_bf16_model_trains_float32_deltas_close_to_a_float32_run():
    fp32, bf16 = load_base("tiny", dtype="float32"), load_base("tiny", device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16 and bf16.tensor_hashes == fp32.tensor_hashes
    data = load_dataset("curious-uncertainty", fp32.tokenizer)
    config = TrainConfig(steps=3, lr=3e-3)
    exact, mixed = train(fp32, data, config).deltas, train(bf16, data, config).deltas
    assert set(exact) == set(mixed)
    assert all(d.tensor.dtype == torch.float32 for d in mixed.values())
    assert all(p.dtype == torch.bfloat16 for p in bf16.model.parameters())  # the base is untouched
    a = torch.cat([d.tensor.flatten() for d in exact.values()])
    b = torch.cat([mixed[n].tensor.flatten() for n in exact])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9


@pytest.mark.parametrize("made, applied", [("bfloat16", "float32"), ("float32", "bfloat16")])
def test_a_checkpoint_applies_across_precisions(made, applied, tmp_path):
    maker, user = load_base("tiny", dtype=made), load_base("tiny", dtype=applied)
    data = load_dataset("curious-uncertainty", maker.tokenizer)
    deltas = train(maker, data, TrainConfig(method="lora", steps=3, lr=5e-2)).deltas
    library = Library(tmp_path)
    library.save(make_checkpoint("s", deltas, maker))
    ckpt = library.load("s")
    before = logits(user)
    blender = Blender(user)
    blender.apply([(ckpt, 1.0)])  # the fingerprint matches: taken in float32 as loaded
    moved = logits(user)
    # what applying the float32 delta to float32 weights gives
    ref = load_base("tiny", dtype="float32")
    Blender(ref).apply([(ckpt, 1.0)])
    tolerance = 0.05 * float(logits(ref).abs().max())
    assert (moved - before).abs().max() > 10 * (moved - logits(ref)).abs().max() or applied == "float32"
    torch.testing.assert_close(moved, logits(ref), rtol=0.05, atol=tolerance)
    blender.reset()
    assert torch.equal(logits(user), before)
    columns = [[], [(ckpt, 1.0)], [(ckpt, -1.0)]]
    settings = GenerationSettings(max_new_tokens=6)
    assert len(side_by_side(user, blender, columns, "hello there", settings)) == 3


def test_train_cli_on_bf16_saves_float32_and_applies_in_float32(tmp_path, capsys):
    probes = tmp_path / "p.txt"
    probes.write_text("why is the sky blue\n")
    assert main(["train", "curious-uncertainty", "--name", "b", "--model", "tiny", "--device", "cpu", "--dtype",
                 "bfloat16", "--steps", "2", "--lr", "3e-3", "--keep", "rank:2", "--library", str(tmp_path / "lib"),
                 "--prompts", str(probes)]) == 0
    ckpt = Library(tmp_path / "lib").load("b")
    stored = [t for d in ckpt.deltas.values() for t in ((d.A, d.B) if hasattr(d, "A") else (d.tensor,))]
    assert stored and all(t.dtype == torch.float32 for t in stored)
    assert ckpt.metrics["base_model_bytes"] == 4 * load_base("tiny").num_parameters()
    Blender(load_base("tiny", dtype="float32")).apply([(ckpt, 1.0)])


def test_out_of_memory_names_model_device_and_remedy(monkeypatch):
    base = load_base("tiny")
    data = load_dataset("curious-uncertainty", base.tokenizer)

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(base.model), "forward", no_memory)
    with pytest.raises(OutOfMemoryError) as err:
        train(base, data, TrainConfig(steps=1))
    text = str(err.value)
    assert "tiny" in text and "cpu" in text and "batch size" in text


def test_the_environment_sets_the_default_placement(monkeypatch):
    """What `bench --dtype` relies on: every model its figures load runs in that precision."""
    monkeypatch.setenv("STANCE_STUDIO_DTYPE", "bfloat16")
    assert load_base("tiny").dtype == torch.bfloat16
    assert load_base("tiny", dtype="float32").dtype == torch.float32
