"""What real models write at the end of an answer, and what rtool reads from it: a table to grow.

Add a row when a model's format is misread: (where the format comes from, the completion, the gold answer, the
pred rtool must extract, whether it is correct). Multiple choice with options is in test_grading_choices.py.
"""

import pytest

from rtool.grade.answers import extract_answer, grade

FORMATS = [
    # Qwen2.5 / Qwen2.5-Math (the reasoning system prompt asks for \boxed{}): the box at the end.
    ("qwen2.5", "Natalia sold 48 / 2 = 24 clips in May.\nSo in total 48 + 24 = 72.\n\nThe answer is $\\boxed{72}$.",
     "72", "72", True),
    ("qwen2.5", "Thus $x = \\frac{3}{4}$, and the final answer is:\n\\[\n\\boxed{\\frac{3}{4}}\n\\]", "0.75",
     "\\frac{3}{4}", True),
    ("qwq / qwen3", "**Final Answer**\n\\boxed{12}", "12", "12", True),
    # Llama-3 instruct: the Minerva / lm-eval format, with and without $...$, and Llama-3.1's own.
    ("llama-3 minerva", "Final Answer: The final answer is $18$. I hope it is correct.", "18", "18", True),
    ("llama-3 minerva", "Final Answer: The final answer is 18. I hope it is correct.", "18", "18", True),
    ("llama-3 minerva", "Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "0.5",
     "\\frac{1}{2}", True),
    ("llama-3.1", "## Step 3: Add\n48 + 24 = 72\n\nThe final answer is: $\\boxed{72}$", "72", "72", True),
    ("markdown", "**Final Answer:** The answer is 12", "12", "12", True),
    ("markdown", "**Final Answer:** 64", "64", "64", True),
    # DeepSeek-R1 style: reasoning in <think>, then the answer. The answer after </think> is the one that counts.
    ("deepseek-r1", "<think>\nLet me add: 48 + 24 = 72. So the answer is 72.\n</think>\n\nThe answer is \\boxed{72}.",
     "72", "72", True),
    ("deepseek-r1", "<think>\nFirst guess: \\boxed{17}. Wait, I dropped a carry.\n</think>\n\n"
                    "**Final Answer**\nThe final answer is 18.", "18", "18", True),
    ("deepseek-r1", "<think>the answer is 3</think> The answer is 4", "3", "4", False),
    # R1's template opens <think> in the prompt: the completion starts inside the block.
    ("deepseek-r1 (open in prompt)", "Okay, 7 * 6 = 42, so the answer is 41? No.\n</think>\n\nThe answer is $42$.",
     "42", "42", True),
    # Cut off while thinking: an answer inside an unclosed <think> is a draft, not a statement.
    ("deepseek-r1 (cut off)", "<think>\nLet me see, the answer is 5. Or maybe", "5", None, False),
    # R1-Zero (--format-tags think,answer): the content of the last <answer> block is the answer, read as any
    # completion is read (a box inside wins, else "the answer is", else the bare value).
    ("r1-zero", "<think>2+3=5</think><answer>5</answer>", "5", "5", True),
    ("r1-zero", "<think>\nadd\n</think>\n<answer>\nThe answer is 5\n</answer>", "5", "5", True),
    ("r1-zero", "<answer>The answer is 5</answer>", "5", "5", True),
    ("r1-zero", "<think>halve</think><answer>So \\boxed{\\frac{1}{2}}.</answer>", "0.5", "\\frac{1}{2}", True),
    ("r1-zero", "<think>x</think><answer>$12$.</answer>", "12", "12", True),
    ("r1-zero", "<think>count</think><answer>48 sheep</answer>", "48", "48", True),
    ("r1-zero", "<think>the answer is 3</think><answer>(B)</answer>", "B", "B", True),
    ("r1-zero", "<answer>4</answer> Wait, no. <answer>5</answer>", "5", "5", True),
    ("r1-zero", "<answer>5</answer> The answer is 6", "5", "5", True),
    ("r1-zero", "<think>\\boxed{7}</think><answer></answer>", "7", None, False),
    # Cut off inside the last block: no answer, even when an earlier block stated one.
    ("r1-zero (cut off)", "<think>x</think><answer>4</answer><answer>5", "4", None, False),
    # Mistral instruct.
    ("mistral", "First, 48 / 2 = 24. Then 48 + 24 = 72. The answer is 72.", "72", "72", True),
    ("mistral", "So she has 10 apples left.\n\nThe answer is: 10", "10", "10", True),
    # GSM8K's reference format, which SFT on GSM8K teaches.
    ("gsm8k", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72",
     "72", "72", True),
    ("gsm8k", "#### 1,000", "1000", "1,000", True),
    # Multiple choice without the row's options: letters only.
    ("multiple choice", "(B)", "B", "B", True),
    ("multiple choice", "Answer: B", "B", "B", True),
    ("multiple choice", "The correct option is C", "C", "C", True),
    ("multiple choice", "Comparing the options, the correct option is C because it fits all three findings.",
     "C", "C", True),
    ("multiple choice", "The correct answer is (D) Hypertension.", "D", "D", True),
    ("multiple choice", "The answer is option C.", "C", "C", True),
    ("multiple choice", "**B**", "B", "B", True),
    # A cut-off box is no answer, even when an earlier sentence stated one.
    ("truncated", "So the answer is 5. Then \\boxed{6", "5", None, False),
    ("truncated", "We get \\boxed{1} first, then the final \\boxed{\\frac{1}{", "1", None, False),
    # What must not be read as an answer.
    ("prose", "Another option is to count by hand. The answer is 4.", "4", "4", True),
    ("prose", "I could not solve it.", "4", None, False),
]


@pytest.mark.parametrize("source, completion, gold, pred, correct", FORMATS,
                         ids=[f"{i}-{row[0]}" for i, row in enumerate(FORMATS)])
def test_model_output_formats(source, completion, gold, pred, correct):
    assert extract_answer(completion) == pred
    assert grade(gold, completion) == (pred, correct)
