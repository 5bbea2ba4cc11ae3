"""Training recipes: what each training command trains on, for `rtool.train.run.run_training`.

    examples = SFTExamples(FieldMap(), system=REASONING_SYSTEM_PROMPT, max_length=2048, truncation="drop")
    recipe = sft_recipe(examples, packing=False, mask_thought=0.0, seed=0)
    out = run_training(recipe, TrainRun.from_flags(opts, lr=2e-5))

sft: TRL's SFTTrainer on examples tokenized by `rtool.train.data` (prompt + completion through the chat template,
loss on the completion tokens and the end of their turn), optionally packed and with Masked Thought.
redi: `rtool.train.redi.RediTrainer` (the REDI loss, no reference model) on (correct, incorrect) pairs (`RediPairs`).
grpo: `rtool.train.grpo`'s GRPOTrainer (TRL's, with rtool's metric names and failure-curve watch) on prompts, rtool.train.rewards.
prm-train: `rtool.train.prm.PRMTrainer` (cross-entropy at the step separators) on step-labelled traces, a 2-label
token-classification model (`rtool.train.prm.load_prm`), a held-out share of the prompts evaluated.
"""

from __future__ import annotations

from rtool.errors import UserError
from rtool.train.data import SFTExamples
from rtool.train.run import Recipe


def sft_recipe(examples: SFTExamples, *, packing: bool = False, mask_thought: float = 0.0, seed: int = 0) -> Recipe:
    """The sft recipe: causal-LM loss on completion tokens, over `examples` (which say which rows and how long)."""
    if not 0 <= mask_thought < 1:
        raise UserError(f"--mask-thought must be in [0, 1), got {mask_thought}")

    def build_trainer(*, model, tokenizer, dataset, args, peft_config, callbacks):
        from trl import SFTTrainer

        from rtool.train.core import apply_mask_thought, mask_token_id

        trainer = SFTTrainer(model, sft_config(args, max_length=examples.max_length, packing=packing),
                             train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
                             callbacks=callbacks)
        if mask_thought > 0:
            apply_mask_thought(trainer, mask_thought, mask_token_id(tokenizer), seed=seed)
        return trainer

    return Recipe(examples.name, examples=examples, features=examples.features, build_trainer=build_trainer,
                  report=examples.report, empty_hint=examples.empty_hint)


def sft_config(args: dict, *, max_length: int, packing: bool):
    """TRL's SFTConfig from the shared trainer arguments (`core.trainer_args`): loss on completion tokens only.
    The examples arrive tokenized and within `max_length` (TRL's own truncation then changes nothing); with
    `packing`, several of them share each `max_length` sequence (best-fit, no cross-row attention)."""
    from trl import SFTConfig

    return SFTConfig(**args, max_length=max_length, packing=packing, completion_only_loss=True,
                     assistant_only_loss=False)


def redi_recipe(examples, *, alpha: float = 0.8) -> Recipe:
    """The redi recipe (rtool.train.redi): the REDI loss over (correct, incorrect) pairs, `examples` a
    `rtool.train.redi.RediPairs` (which rows pair up and how long they may be); no reference model."""
    from rtool.train.redi import check_alpha, collapse_marks, make_trainer

    check_alpha(alpha)

    def build_trainer(*, model, tokenizer, dataset, args, peft_config, callbacks):
        return make_trainer(model=model, tokenizer=tokenizer, dataset=dataset, args=args, peft_config=peft_config,
                            callbacks=callbacks, alpha=alpha)

    return Recipe(examples.name, examples=examples, features=examples.features, build_trainer=build_trainer,
                  report=examples.report, empty_hint=examples.empty_hint, curve_marks=collapse_marks)


def grpo_recipe(prompts, *, rewards, settings) -> Recipe:
    """The grpo recipe (rtool.train.grpo): TRL's GRPOTrainer on `prompts` (a `rtool.train.grpo.GRPOPrompts`), rewarded by
    `rewards` (a `rtool.train.rewards.RewardSet`), with `settings` (a `rtool.train.grpo.GRPOSettings`); BAI's failure curves
    marked on OUT/curves.png."""
    from rtool.train.grpo import curve_marks, curve_panels, make_trainer

    def build_trainer(*, model, tokenizer, dataset, args, peft_config, callbacks):
        return make_trainer(model=model, tokenizer=tokenizer, dataset=dataset, args=args, peft_config=peft_config,
                            callbacks=callbacks, rewards=rewards, settings=settings)

    return Recipe(prompts.name, examples=prompts, features=prompts.features, build_trainer=build_trainer,
                  report=prompts.report, empty_hint=prompts.empty_hint, curve_marks=curve_marks(settings.watch),
                  curve_metrics=curve_panels)


def prm_recipe(examples, *, eval_split: float = 0.0, eval_steps: int | None = None, seed: int = 0) -> Recipe:
    """The prm-train recipe (rtool.train.prm): a qwen-prm token classifier trained at the step separators over
    `examples` (a `rtool.train.prm.PRMExamples`); `eval_split` of the prompts held out (chosen by `seed`) and
    evaluated every `eval_steps` optimizer steps and at the end (eval_loss, eval_accuracy, eval_auc)."""
    from rtool.train.prm import check_eval, curve_panels, load_prm, make_trainer

    check_eval(eval_split, eval_steps)

    def build_trainer(*, model, tokenizer, dataset, args, peft_config, callbacks):
        return make_trainer(model=model, tokenizer=tokenizer, dataset=dataset, args=args, peft_config=peft_config,
                            callbacks=callbacks, eval_split=eval_split, eval_steps=eval_steps, seed=seed,
                            conversation=examples.conversation())

    def load_model(spec, **kwargs):
        return load_prm(spec, seed=seed, **kwargs)

    return Recipe(examples.name, examples=examples, features=examples.features, build_trainer=build_trainer,
                  report=examples.report, empty_hint=examples.empty_hint, load_model=load_model,
                  lora_task="TOKEN_CLS", curve_metrics=curve_panels)
