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


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no-such-arch"}')
    with pytest.raises(ModelLoadError) as err:
        load_base(str(tmp_path))
    assert str(tmp_path) in str(err.value)


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
