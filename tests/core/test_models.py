import shutil
import struct

import pytest

from stance_studio.core.errors import ModelLoadError
from stance_studio.core.models import load_base, tensor_hash
from stance_studio.core.tiny import tiny_base


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_base(str(tmp_path / "no-such-model"))


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_base(str(tmp_path))


def test_non_gguf_file_is_refused(tmp_path):
    f = tmp_path / "weights.txt"
    f.write_text("x")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        load_base(str(f))


@pytest.mark.parametrize("config, model_type", [
    ('{"model_type": "no-such-arch"}', "no-such-arch"),
    ('{"model_type": "t5"}', "t5"),  # known to transformers, but not a causal LM
])
def test_unsupported_architecture_is_a_clear_error(tmp_path, config, model_type):
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(ModelLoadError) as err:
        load_base(str(tmp_path))
    message = str(err.value)
    assert str(tmp_path) in message and "unsupported architecture" in message and repr(model_type) in message
    assert "tokenizer" not in message


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """A tiny model saved the usual way (save_pretrained writes model.safetensors)."""
    folder = tmp_path_factory.mktemp("saved") / "m"
    base = tiny_base()
    base.model.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return folder


def test_truncated_weights_are_a_clear_error(saved_tiny, tmp_path):
    folder = shutil.copytree(saved_tiny, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="truncated, corrupt") as err:
        load_base(str(folder))
    assert str(folder) in str(err.value)
    assert type(err.value.__cause__).__name__ == "SafetensorError"


def test_pickle_only_weights_are_refused_unread(saved_tiny, tmp_path, monkeypatch):
    import torch

    folder = shutil.copytree(saved_tiny, tmp_path / "m")
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was loaded"))
    with pytest.raises(ModelLoadError, match=r"only pickle weights \(pytorch_model.bin\).*never unpickles") as err:
        load_base(str(folder))
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("data", [
    b"GGUF" + struct.pack("<I", 3) + b"\x01\x02\x03",  # truncated: struct.error inside gguf
    b"GGUF" + struct.pack("<I", 99) + bytes(64),  # a version no reader handles
])
def test_corrupt_gguf_is_a_clear_error(tmp_path, data):
    f = tmp_path / "broken.gguf"
    f.write_bytes(data)
    with pytest.raises(ModelLoadError, match="Could not load the GGUF file") as err:
        load_base(str(f), use_cache=False)
    assert str(f) in str(err.value) and err.value.__cause__ is not None


def test_gguf_without_gguf_package_is_explained(tmp_path, monkeypatch):
    import importlib.util

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install gguf"):
        load_base(str(f), use_cache=False)


def test_saved_folder_loads_with_same_fingerprint(tmp_path):
    base = tiny_base()
    base.model.save_pretrained(tmp_path / "m")
    base.tokenizer.save_pretrained(tmp_path / "m")
    again = load_base(str(tmp_path / "m"))
    names = list(base.tensor_hashes)
    assert again.fingerprint(names) == base.fingerprint(names)
    assert again.num_layers == 4 and again.architecture == "LlamaForCausalLM"
    assert not any(p.requires_grad for p in again.model.parameters())


def test_fingerprint_tells_models_apart():
    a, b = tiny_base(seed=0), tiny_base(seed=1)
    names = ["model.layers.0.self_attn.q_proj.weight"]
    assert a.fingerprint(names) != b.fingerprint(names)
    assert tensor_hash(a.parameters[names[0]]) == tensor_hash(a.parameters[names[0]].clone())
