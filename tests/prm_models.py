"""Tiny reward models of each convention rtool.prm.score reads, built locally (no hub) for tests and bench/prm_score.py.

    build_prm("qwen-prm", out_dir)        # LlamaForTokenClassification, 2 labels, '<extra_0>' in the tokenizer
    build_prm("math-shepherd", out_dir)   # LlamaForCausalLM whose tokenizer has 'ки', '+' and '-'
    build_prm("orm", out_dir, labels=1)   # LlamaForSequenceClassification, 1 label (or 2)
    build_prm("causal-lm", out_dir)       # a plain causal LM without 'ки': fits no convention

Weights are random, with the final norm scaled up so that logits are larger: scores of different steps differ by
1e-3..1e-2, far more than float rounding (1e-6), so a score read at the wrong position shows.
"""

import string

from rtool.tiny import IM_START, char_tokenizer, save_tiny

SAMPLE = [string.ascii_letters + string.digits + string.punctuation + " \n"]


def build_prm(kind: str, out_dir, *, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4,
              labels: int = 1, seed: int = 0, extra_tokens=None, max_position_embeddings: int = 2048):
    import torch
    import transformers

    extra = {"qwen-prm": ["<extra_0>"], "math-shepherd": ["ки"]}.get(kind, [])
    tokenizer = char_tokenizer(SAMPLE, extra_tokens=extra if extra_tokens is None else extra_tokens)
    classes = {"qwen-prm": ("LlamaForTokenClassification", 2), "math-shepherd": ("LlamaForCausalLM", None),
               "causal-lm": ("LlamaForCausalLM", None), "orm": ("LlamaForSequenceClassification", labels)}
    class_name, num_labels = classes[kind]
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=True, dtype="float32",
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_START), eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **({"num_labels": num_labels} if num_labels else {}))
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config).to(torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(4.0)  # larger logits: scores spread wider than all near 0.5
    return save_tiny(model, tokenizer, out_dir)
