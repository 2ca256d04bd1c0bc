"""A tiny Llama-style model and byte-level BPE tokenizer built in code.

Tests, demos and the ``--model tiny`` spec use it: it needs no download, loads in
well under a second and exercises the same code paths as a real model.
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


def tiny_model(vocab_size: int, seed: int = 0, layers: int = 4, hidden: int = 32):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        # A wide init makes a random tiny model produce varied text, not one token.
        initializer_range=0.3,
        architectures=["LlamaForCausalLM"],
    )
    gen = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(gen)
    model.generation_config.pad_token_id = None
    return model


def tiny_base(seed: int = 0, layers: int = 4, hidden: int = 32):
    """A ready :class:`~stance_studio.core.models.BaseModel` around a tiny model."""
    from stance_studio.core.models import from_objects

    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=seed, layers=layers, hidden=hidden)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return from_objects(model, tok, model_id=f"{TINY}:{seed}" if seed else TINY, source=TINY)
