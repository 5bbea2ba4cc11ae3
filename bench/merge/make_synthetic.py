"""Write three synthetic fp32 models with the tensor shapes of a ~0.5B Llama (about 2 GB each).

    python bench/merge/make_synthetic.py /tmp/bench-merge/synthetic

Shapes follow Qwen2.5-0.5B written as a Llama (hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864,
vocabulary 151936, tied embeddings): 494M parameters, 1.98 GB in fp32. Values are N(0, 0.02²), one seed per
model. Each dir gets a config.json so the merge sees a model; there is no tokenizer (the bench does not load it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from rtool.io.tensors import ShardWriter, plan_shards

HIDDEN, LAYERS, HEADS, KV_HEADS, MLP, VOCAB = 896, 24, 14, 2, 4864, 151936


def shapes() -> list[tuple[str, tuple[int, ...]]]:
    head_dim = HIDDEN // HEADS
    out = [("model.embed_tokens.weight", (VOCAB, HIDDEN)), ("model.norm.weight", (HIDDEN,))]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (HIDDEN,)), (p + "post_attention_layernorm.weight", (HIDDEN,)),
                (p + "self_attn.q_proj.weight", (HEADS * head_dim, HIDDEN)),
                (p + "self_attn.k_proj.weight", (KV_HEADS * head_dim, HIDDEN)),
                (p + "self_attn.v_proj.weight", (KV_HEADS * head_dim, HIDDEN)),
                (p + "self_attn.o_proj.weight", (HIDDEN, HEADS * head_dim)),
                (p + "mlp.gate_proj.weight", (MLP, HIDDEN)), (p + "mlp.up_proj.weight", (MLP, HIDDEN)),
                (p + "mlp.down_proj.weight", (HIDDEN, MLP))]
    return out


def config() -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
            "intermediate_size": MLP, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "tie_word_embeddings": True,
            "rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "dtype": "float32"}


def write_model(out_dir: Path, seed: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = shapes()
    shards = plan_shards([(name, "F32", shape) for name, shape in tensors], max_shard_size=10**12)
    with ShardWriter(out_dir, shards) as writer:
        for name, shape in tensors:
            rows = shape[0]
            step = max(1, (1 << 22) // (int(np.prod(shape)) // rows))
            for row0 in range(0, rows, step):
                part = rng.standard_normal((min(step, rows - row0),) + shape[1:], dtype=np.float32)
                part *= np.float32(0.02)
                writer.write(name, row0 * part[0].nbytes, part)
        writer.close(sync=True)
    (out_dir / "config.json").write_text(json.dumps(config(), indent=2) + "\n")


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for seed, role in enumerate(("reasoning", "instruct", "pretrained"), start=1):
        write_model(root / role, seed)
        print(root / role)
