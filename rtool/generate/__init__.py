"""Generation: the one interface (core: SamplingParams, Completion, Backend, sample seeds), the backends behind
it (backends/: hf, vllm, openai, fleet), rtool's token sampler (sampler), graded traces (traces) and prompt
templates (templates: distill --prompt-template).
Imports the base, rtool.io and rtool.grade. Entry points: open_backend, SamplingParams, sample_traces.
"""
