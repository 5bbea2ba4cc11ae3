"""merge-bai, Balanced Actor Initialization: the plan, streamed sharded writes and provenance (bai), per-tensor
arithmetic bit-identical to mergekit (arithmetic), model dirs and LoRA adapters as tensor sources (sources).
Imports the base and rtool.io. Entry points: plan_merge, merge_bai, open_source.
"""
