"""Tiny random models of several families and a byte-level BPE tokenizer, built in code.

Tests, demos and the ``--model tiny[:ARCH][:SEED][:layers=N]`` spec use them: they need
no download, load in well under a second and exercise the same code paths as a real
model of that family (GPT-2's fused, transposed ``Conv1D`` attention, Phi-3's fused
``qkv_proj``, Gemma 2's ``x̂ ⊙ (1 + w)`` norms, Qwen2's attention biases).
"""

from __future__ import annotations

import functools

import torch

TINY = "tiny"

_CORPUS = [
    "I'm not fully sure, but I think the answer might depend on the context.",
    "Certainly. The answer is clearly this, and it is definitely correct.",
    "This is a hard question; let me work through it step by step.",
    "What causes the seasons on Earth? The tilt of the axis.",
    "Perhaps we could look at it another way. I wonder whether that holds.",
    "The water boils at one hundred degrees at sea level.",
    "Explain how a bridge carries weight across a river.",
    "You are a helpful assistant. The user asks a question and you answer.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


# Each family's config class and the keyword names of its sizes; the width, depth,
# head counts and vocabulary come from tiny_model's arguments.
FAMILIES = ("llama", "qwen2", "mistral", "gemma2", "phi3", "gpt2")
_CONFIGS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
}


def _config(arch: str, vocab_size: int, layers: int, hidden: int, special: dict):
    import transformers

    config_name, model_name = _CONFIGS[arch]
    common = dict(vocab_size=vocab_size, tie_word_embeddings=True, architectures=[model_name],
                  # A wide init makes a random tiny model produce varied text, not one token.
                  initializer_range=0.3, **special)
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=512, **common)
    extra = {"head_dim": hidden // 4} if arch in ("gemma2", "mistral") else {}
    if arch == "gemma2":
        extra.update(sliding_window=64, attn_implementation="eager")
    return getattr(transformers, config_name)(
        hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, **extra, **common,
    )


def tiny_model(vocab_size: int, seed: int = 0, layers: int = 4, hidden: int = 32, arch: str = "llama",
               special: dict | None = None):
    """A random model of family ``arch`` (see :data:`FAMILIES`), the same for the same seed."""
    from transformers import AutoModelForCausalLM

    if arch not in FAMILIES:
        raise ValueError(f"unknown tiny model family {arch!r}")
    config = _config(arch, vocab_size, layers, hidden, special or {})
    gen = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.random.set_rng_state(gen)
    model.generation_config.pad_token_id = None
    return model


def parse_tiny_spec(spec: str) -> dict:
    """``tiny[:ARCH][:SEED][:layers=N]`` as keyword arguments of :func:`tiny_base`."""
    out: dict = {}
    for part in str(spec).split(":")[1:]:
        part = part.strip().lower()
        if part in FAMILIES and "arch" not in out:
            out["arch"] = part
        elif part.isdigit() and "seed" not in out:
            out["seed"] = int(part)
        elif part.startswith("layers=") and part[7:].isdigit() and int(part[7:]) >= 1 and "layers" not in out:
            out["layers"] = int(part[7:])
        else:
            from stance_studio.core.errors import ModelLoadError

            raise ModelLoadError(
                f"Cannot read {part!r} in the model spec {spec!r}; write tiny[:ARCH][:SEED][:layers=N] "
                f"with ARCH one of {', '.join(FAMILIES)}, e.g. tiny:gpt2:1."
            )
    return out


def tiny_spec(arch: str = "llama", seed: int = 0, layers: int = 4) -> str:
    """The model id of a tiny model: ``tiny`` for the default llama, else ``tiny:ARCH:SEED``."""
    parts = [TINY] + ([arch] if arch != "llama" else []) + ([str(seed)] if seed or arch != "llama" else [])
    if layers != 4:
        parts.append(f"layers={layers}")
    return ":".join(parts)


def tiny_base(seed: int = 0, layers: int = 4, hidden: int = 32, arch: str = "llama"):
    """A ready :class:`~stance_studio.core.models.BaseModel` around a tiny model."""
    from stance_studio.core.base_model import from_objects

    tok = tiny_tokenizer()
    special = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    model = tiny_model(len(tok), seed=seed, layers=layers, hidden=hidden, arch=arch, special=special)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return from_objects(model, tok, model_id=tiny_spec(arch, seed, layers), source=TINY)
