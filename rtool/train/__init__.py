"""Training: the shared core (run: run_training; core: trainer arguments, saving; metrics_log; precision: dtype, LoRA;
checkpoints: resume and run settings; outdir: what a run owns in OUT; inputs: resolved and hashed; processes: ranks;
sharding: the model load under ZeRO-3/FSDP; data: rows -> token ids; recipes; card: OUT/README.md), one module per
objective (redi, grpo, prm) with grpo's rewards, curves and failure curves. Imports every stage below it (base, io,
grade, generate, prm). Entry points: run_training, TrainRun, recipes.
"""

from rtool.train.rewards import RewardSet, parse_reward_spec
from rtool.train.failure_curves import CurveWatch

__all__ = ["RewardSet", "parse_reward_spec", "CurveWatch"]
