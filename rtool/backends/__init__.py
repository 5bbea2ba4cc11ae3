"""Generation backends (hf, vllm, openai); use them through `rtool.generation.open_backend`."""
