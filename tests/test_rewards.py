"""rtool.train.rewards: the reward spec, each reward as a pure function, python rewards and their output checks."""

from __future__ import annotations

import math

import pytest

from rtool.errors import UserError
from rtool.train.rewards import (RewardSet, RewardSpec, accuracy_rewards, checked_rewards, completion_text,
                           default_length_buffer, format_rewards, length_penalties, load_python_reward,
                           opened_tag, parse_format_tags, parse_reward_spec)


def test_spec_names_weights_and_python_targets():
    specs = parse_reward_spec("accuracy=1, format=0.1,length=-0.5,python:my_rewards:brevity=0.2,prm")
    assert specs == [RewardSpec("accuracy", 1.0), RewardSpec("format", 0.1), RewardSpec("length", -0.5),
                     RewardSpec("python", 0.2, "my_rewards:brevity"), RewardSpec("prm", 1.0)]
    assert [s.label for s in specs] == ["accuracy", "format", "length", "brevity", "prm"]
    # A file path with a drive-like colon still splits at the last colon.
    assert parse_reward_spec("python:rewards/mine.py:f=2")[0] == RewardSpec("python", 2.0, "rewards/mine.py:f")


@pytest.mark.parametrize("text, message", [
    ("acuracy=1", "unknown reward 'acuracy'"),
    ("accuracy=high", "the weight 'high' is not a number"),
    ("accuracy=nan", "finite"),
    ("accuracy=1,accuracy=2", "names 'accuracy' twice"),
    ("python:nofunction=1", "python:MODULE:FUNCTION"),
    ("python=1", "unknown reward 'python'"),
    (" , ", "empty"),
    ("accuracy=0,format=0", "every weight is 0"),
])
def test_spec_errors_say_what_is_wrong(text, message):
    with pytest.raises(UserError) as caught:
        parse_reward_spec(text)
    assert message in str(caught.value)
    if "unknown" in message:
        assert "accuracy, format, length, prm, python:MODULE:FUNCTION" in caught.value.render()


def test_accuracy_grades_like_distill_and_eval():
    completions = ["7+8=15\nAnswer: \\boxed{505}.", "\\boxed{504}", "no answer at all", "\\boxed{\\frac{1}{2}}",
                   [{"role": "assistant", "content": "so \\boxed{0.5}"}]]
    golds = ["505", "505", "505", "0.5", "\\frac12"]
    assert accuracy_rewards(completions, golds) == [1.0, 0.0, 0.0, 1.0, 1.0]
    # Multiple choice: by letter or option text; a gold that cannot be parsed gives no opinion (None).
    options = [{"A": "Hypertension", "B": "Heart failure"}, None]
    assert accuracy_rewards(["The answer is (B)", "\\boxed{3}"], ["B", ""], options) == [1.0, None]
    # R1-Zero completions (--format-tags think,answer): graded by their last <answer> block, as format reads them.
    r1_zero = ["<think>2+3=5</think><answer>5</answer>", "<think>x</think><answer>The answer is 5</answer>",
               "<think>the answer is 5</think><answer>6</answer>"]
    assert accuracy_rewards(r1_zero, ["5"] * 3) == [1.0, 1.0, 0.0]
    assert format_rewards(r1_zero, ("think", "answer")) == [1.0, 1.0, 1.0]


def test_format_boxed_or_tags():
    # An empty box (the default system prompt names `\boxed{}`) states nothing.
    assert format_rewards(["x \\boxed{5}", "x \\boxed{5", "<think>\\boxed{5}</think> so 5", "5",
                           "<think>a</think> \\boxed{5}", "put it in \\boxed{}", "\\boxed{ }",
                           "\\boxed{5} then \\boxed{}"]) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    tags = parse_format_tags("think,answer")
    assert tags == ("think", "answer")
    assert format_rewards(["<think>\nadd\n</think>\n<answer>\n5\n</answer>\n", "<think>add</think><answer> </answer>",
                           "<answer>5</answer><think>x</think>", "hi <think>a</think><answer>5</answer>",
                           "<think>a</think><answer>5</answer> extra"], tags) == [1.0, 0.0, 0.0, 0.0, 0.0]
    # Each block exactly once, in order, not nested.
    assert format_rewards(["<think>a</think><answer>5</answer><answer>6</answer>",
                           "<think>a</think><think>b</think><answer>5</answer>",
                           "<think>a <think>b</think></think><answer>5</answer>",
                           "<think>a</think><answer><answer>5</answer></answer>",
                           "<think>a</think><answer>5 <think>b</think></answer>",
                           "<think>a</think><answer>5</answer><think>b</think>",
                           "<think>a</think>\n\n<answer>5</answer>\n"], tags) == [0.0] * 6 + [1.0]
    assert format_rewards(["<answer>5</answer><answer>6</answer>", " <answer>5</answer> "], ("answer",)) == [0.0, 1.0]
    assert parse_format_tags("<think>, </answer>") == ("think", "answer")
    assert parse_format_tags("") is None
    with pytest.raises(UserError, match="tag names"):
        parse_format_tags("think,a b")


# Generation prompts as the real chat templates render them (tests/test_chat_templates.py holds the templates).
R1_PROMPT = "<｜begin▁of▁sentence｜><｜User｜>What is 2+3?<｜Assistant｜><think>\n"      # DeepSeek-R1-Distill
QWQ_PROMPT = "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n<think>\n"  # QwQ-32B
CHATML_PROMPT = "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
LLAMA3_PROMPT = ("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.mark.parametrize("prompt, tag", [(R1_PROMPT, "think"), (QWQ_PROMPT, "think"), (CHATML_PROMPT, None),
                                         (LLAMA3_PROMPT, None), ("<｜Assistant｜>", None), (None, None)])
def test_opened_tag_of_a_generation_prompt(prompt, tag):
    assert opened_tag(prompt) == tag


def test_format_counts_the_tag_the_prompt_opened():
    # R1-Distill writes after "<think>\n": its completion holds the reasoning, </think> and the answer block.
    tags = ("think", "answer")
    completions = ["add 2 and 3\n</think>\n<answer>5</answer>", "<think>add</think><answer>5</answer>",
                   "add 2 and 3\n</think>\n5", "</think><answer>5</answer>", "add <answer>5</answer>"]
    assert format_rewards(completions, tags, opened="think") == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert format_rewards(completions, tags) == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert format_rewards(completions, tags, opened="reasoning") == [0.0, 1.0, 0.0, 0.0, 0.0]  # a tag not asked for
    # The trainer's reward, given the rendered prompt.
    rewards = RewardSet(parse_reward_spec("format=1"), format_tags=tags)
    for prompt, expected in ((R1_PROMPT, [1.0, 0.0]), (QWQ_PROMPT, [1.0, 0.0]), (CHATML_PROMPT, [0.0, 1.0]),
                             (None, [0.0, 1.0])):
        [reward], _ = rewards.functions(generation_prompt=prompt)
        assert reward(prompts=["q", "q"], completions=[[{"role": "assistant", "content": c}]
                                                        for c in completions[:2]]) == expected


def test_length_penalty_is_dapos_soft_overlong_punishment():
    # L_max 100, buffer 20: free up to 80, then linear to -1 at 100, -1 beyond.
    assert length_penalties([0, 80, 81, 90, 100, 101], max_length=100, buffer=20) == \
        [0.0, 0.0, -0.05, -0.5, -1.0, -1.0]
    assert default_length_buffer(1024) == 205
    with pytest.raises(UserError, match="--length-buffer"):
        length_penalties([1], max_length=100, buffer=0)
    with pytest.raises(UserError, match="--length-buffer"):
        RewardSet(parse_reward_spec("length=1"), max_completion_length=100, length_buffer=101)
    # Out of range is refused without the length reward too (`grpo --length-buffer -1` once trained without a word).
    with pytest.raises(UserError, match=r"--length-buffer must be in \[1, --max-completion-length 100\], got -1"):
        RewardSet(parse_reward_spec("accuracy=1"), max_completion_length=100, length_buffer=-1)


def test_reward_set_functions_are_named_and_weighted(tmp_path, monkeypatch):
    (tmp_path / "set_rewards.py").write_text(
        "def brevity(prompts, completions, completion_ids, **kwargs):\n"
        "    return [1.0 / (1 + len(ids)) for ids in completion_ids]\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    rewards = RewardSet(parse_reward_spec("accuracy=1,format=0.1,length=0.5,python:set_rewards:brevity=2"),
                        max_completion_length=10, length_buffer=5)
    functions, weights = rewards.functions()
    assert [f.__name__ for f in functions] == ["accuracy", "format", "length", "brevity"]
    assert weights == [1.0, 0.1, 0.5, 2.0]
    kwargs = dict(prompts=["q", "q"], completions=["\\boxed{3}", "\\boxed{4}"], completion_ids=[[1, 2, 3], [1] * 10],
                  answer=["3", "3"], options=["", ""], trainer_state=None)
    assert [f(**kwargs) for f in functions] == [[1.0, 0.0], [1.0, 1.0], [0.0, -1.0], [0.25, 1 / 11]]
    # Multiple-choice options travel as JSON text in the dataset.
    accuracy = functions[0]
    assert accuracy(prompts=["q"], completions=["(A)"], answer=["A"], options=['{"A": "x", "B": "y"}']) == [1.0]


def test_python_rewards_that_do_not_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.py").write_text("def f(:\n", encoding="utf-8")
    (tmp_path / "fine.py").write_text("x = 3\ndef positional(prompts, completions):\n    return [0.0]\n",
                                      encoding="utf-8")
    cases = [("no_such_module:f", "cannot import no_such_module: ModuleNotFoundError"),
             ("broken:f", "cannot import broken: SyntaxError"), ("fine:g", "fine has no 'g'"),
             ("fine:x", "x is a int, not a function"), ("missing.py:f", "no file missing.py")]
    for target, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            load_python_reward(target)
    with pytest.raises(UserError, match=r"must take \*\*kwargs"):
        RewardSet(parse_reward_spec("python:fine:positional=1"))
    assert load_python_reward(str(tmp_path / "fine.py") + ":positional")(["p"], ["c"]) == [0.0]


def test_python_reward_output_is_checked():
    import numpy as np
    import torch

    assert checked_rewards("r", [1, 0.5, None], 3) == [1.0, 0.5, None]
    assert checked_rewards("r", np.array([1.0, 2.0]), 2) == [1.0, 2.0]
    assert checked_rewards("r", torch.tensor([0.5, 1.5]), 2) == [0.5, 1.5]
    assert checked_rewards("r", [np.float32(0.25)], 1) == [0.25]
    for values, message in [([1.0], "returned 1 values for 2 completions"), (1.0, "returned a float"),
                            ("ab", "returned a str"), ([1.0, "x"], "returned str 'x' at position 1"),
                            ([True, 1.0], "returned bool True at position 0"), ({"a": 1}, "returned a dict")]:
        with pytest.raises(UserError, match=message):
            checked_rewards("r", values, 2)


def test_prm_reward_needs_a_model():
    with pytest.raises(UserError, match="--prm"):
        RewardSet(parse_reward_spec("prm=1"))


def test_completion_text_of_chat_and_plain_completions():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"
    assert math.isclose(length_penalties([90], max_length=100, buffer=40)[0], -0.75)
