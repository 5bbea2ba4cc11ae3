"""Training on real reasoning-model chat templates. DeepSeek-R1-Distill's and QwQ's templates keep only the text after
the last `</think>` of an assistant message, and their generation prompts open the `<think>` block themselves: a
student must still train on its whole completion (the reasoning too) after exactly the prompt it is given when asked.
The templates below copy what the real ones do with a conversation of system/user/assistant messages."""

import json
import math
from pathlib import Path

import pytest
import torch

from helpers import run_in_process
from rtool.grade.fields import FieldMap
from rtool.io.records import Row
from rtool.train.data import SFTExamples

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# deepseek-ai/DeepSeek-R1-Distill-Qwen-*'s template (tool calls left out): system prompts first, a user turn is
# <｜User｜>text, an assistant turn keeps what follows its last </think>; the generation prompt opens <think>.
R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}"
    "{%- endfor -%}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)
R1_TOKENS = ["<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"]

# Qwen/QwQ-32B's template (tools left out): ChatML; an assistant turn keeps what follows its last </think>, left-
# stripped of newlines; the generation prompt opens <think>.
QWQ_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)

QUESTIONS = [(f"What is {a}+{b}?", f"I add {a} and {b}, carrying nothing, and get {a + b}.", f"\\boxed{{{a + b}}}")
             for a, b in ((2, 3), (4, 1), (3, 3), (1, 5))]
REASONING_OF = "<think>\n{reasoning}\n</think>\n\n{answer}"  # a completion as an endpoint's reasoning field gives it
END_OF_TURN = {"r1": "<｜end▁of▁sentence｜>", "qwq": "<|im_end|>\n", "chatml": "<|im_end|>\n"}


def build(kind: str, out: Path) -> Path:
    from rtool.tiny import CHAT_TEMPLATE, char_tokenizer, save_tiny, tiny_llama

    sample = ["".join(q + r + a for q, r, a in QUESTIONS) + "<>/think\n "]
    tokenizer = char_tokenizer(sample, extra_tokens=["<think>", "</think>"] + (R1_TOKENS if kind == "r1" else []))
    if kind == "r1":
        tokenizer.bos_token, tokenizer.eos_token = R1_TOKENS[0], R1_TOKENS[3]
    tokenizer.chat_template = {"r1": R1_TEMPLATE, "qwq": QWQ_TEMPLATE, "chatml": CHAT_TEMPLATE}[kind]
    return save_tiny(tiny_llama(tokenizer, hidden_size=32, num_layers=2, num_heads=4, seed=0), tokenizer, out)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("templates")
    return {kind: build(kind, root / kind) for kind in END_OF_TURN}


def tokenizer_of(path):
    from rtool.io.models import load_tokenizer

    return load_tokenizer(path, padding_side="right")


def generation_prompt(tokenizer, question):
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)


@pytest.mark.parametrize("kind", ["r1", "qwq", "chatml"])
@pytest.mark.parametrize("opens_think", [True, False], ids=["completion-opens-think", "completion-in-think"])
def test_the_trained_span_is_the_whole_completion(models, kind, opens_think):
    """The ids are the generation prompt (as distill's hf backend renders it) then the completion as written (its
    reasoning too) and the end of turn; the loss mask covers exactly those; `<think>` appears once."""
    from rtool.generate.core import render_prompts

    tokenizer = tokenizer_of(models[kind])
    question, reasoning, answer = QUESTIONS[0]
    completion = REASONING_OF.format(reasoning=reasoning, answer=answer)
    if not opens_think:  # what a model wrote after a generation prompt that opened the block
        completion = completion.removeprefix("<think>\n")
    [example] = SFTExamples(FieldMap(), system=None)([Row({"prompt": question, "completion": completion},
                                                          "t.jsonl", 1)], tokenizer)
    ids, mask = example["input_ids"], example["completion_mask"]
    prompt = render_prompts(tokenizer, [[{"role": "user", "content": question}]])[0]
    assert ids[:len(prompt)] == prompt and mask == [0] * len(prompt) + [1] * (len(ids) - len(prompt))

    prompt_opens_think = kind != "chatml"
    trained = tokenizer.decode(ids[len(prompt):])
    expected = (f"{reasoning}\n</think>\n\n{answer}" if prompt_opens_think
                else REASONING_OF.format(reasoning=reasoning, answer=answer) if opens_think
                else f"{reasoning}\n</think>\n\n{answer}")
    assert trained == expected + END_OF_TURN[kind]
    assert tokenizer.decode(ids).count("<think>") == (1 if prompt_opens_think or opens_think else 0)


def mean_log_probs(model_dir, tokenizer, parts):
    """Mean log-prob per token of each of `parts`' pieces after the generation prompt: (reasoning, answer), read
    from one forward pass of the model at `model_dir` over generation prompt + completion (computed here, not
    by rtool)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    totals = {"reasoning": [], "answer": []}
    for question, reasoning, answer in parts:
        pieces = [("prompt", generation_prompt(tokenizer, question)), ("reasoning", f"{reasoning}\n</think>"),
                  ("gap", "\n\n"), ("answer", answer)]
        ids, owner = [], []
        for name, text in pieces:
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += piece
            owner += [name] * len(piece)
        with torch.no_grad():
            logits = model(torch.tensor([ids], device=model.device)).logits[0].float()
        log_probs = torch.log_softmax(logits[:-1], dim=-1)
        for position in range(1, len(ids)):
            if owner[position] in totals:
                totals[owner[position]].append(log_probs[position - 1, ids[position]].item())
    return {name: sum(values) / len(values) for name, values in totals.items()}


@pytest.mark.parametrize("kind", ["r1", "qwq"])
def test_sft_raises_the_reasoning_log_prob(capfd, tmp_path, models, kind):
    """A few sft steps on completions recorded with their reasoning: the student learns the reasoning (its mean
    log-prob rises), not only the answer. (With the template's own rendering of the assistant turn, the reasoning
    was cut out and its log-prob fell while the answer's rose.)"""
    rows = [{"prompt": q, "completion": REASONING_OF.format(reasoning=r, answer=a)} for q, r, a in QUESTIONS]
    data = tmp_path / "traces.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "run"
    code, _, stderr = run_in_process(capfd, "sft", "--model", models[kind], "--data", data, "--out", out,
                                     "--no-system", "--max-steps", "8", "--lr", "2e-2", "--lr-scheduler", "constant", "--warmup-ratio", "0",
                                     "--batch-size", "4", "--logging-steps", "1", "--max-length", "256")
    assert code == 0, stderr
    tokenizer = tokenizer_of(models[kind])
    before, after = mean_log_probs(models[kind], tokenizer, QUESTIONS), mean_log_probs(out, tokenizer, QUESTIONS)
    assert all(math.isfinite(v) for v in (*before.values(), *after.values()))
    assert after["reasoning"] - before["reasoning"] > 0.5, (before, after)
    assert after["answer"] - before["answer"] > 0.5, (before, after)


def test_redi_and_prm_train_read_the_reasoning_too(models):
    """redi's pairs and prm-train's steps go through the same rendering: both sides of a pair train on their whole
    completion; every step of a trace (those inside <think> too) gets its separator, after the generation prompt."""
    from rtool.train.prm import PRMExamples
    from rtool.train.redi import RediPairs

    tokenizer = tokenizer_of(models["r1"])
    question, reasoning, answer = QUESTIONS[0]
    prompt = generation_prompt(tokenizer, question)
    right, wrong = (REASONING_OF.format(reasoning=reasoning, answer=a) for a in (answer, "\\boxed{6}"))
    rows = [Row({"id": "a", "prompt": question, "completion": text, "correct": correct}, "t.jsonl", line)
            for line, (text, correct) in enumerate([(right, True), (wrong, False)], 1)]
    [pair] = RediPairs(FieldMap(), system=None)(rows, tokenizer)
    for side, text in (("chosen", right), ("rejected", wrong)):
        ids, mask = pair[f"{side}_input_ids"], pair[f"{side}_completion_mask"]
        start = mask.index(1)
        assert tokenizer.decode(ids[:start]) == prompt
        assert tokenizer.decode(ids[start:]) == text.removeprefix("<think>\n") + END_OF_TURN["r1"]

    steps = [f"<think>\n{reasoning}", "</think>", answer]
    row = Row({"prompt": question, "steps": steps, "step_labels": [1, 1, 1]}, "t.jsonl", 1)
    [example] = PRMExamples(FieldMap(), system=None)([row], tokenizer)
    ids, positions = example["input_ids"], example["positions"]
    assert tokenizer.decode(ids) == prompt + f"{reasoning}<extra_0></think><extra_0>{answer}<extra_0>" \
        + END_OF_TURN["r1"]
    assert [tokenizer.decode(ids[p]) for p in positions] == ["<extra_0>"] * 3
    assert tokenizer.decode(ids[:positions[0]]) == prompt + reasoning


def test_a_continued_partial_turn_opens_think_once(models):
    """prm-label continues a step prefix through render_prompts: with a template whose generation prompt opens
    `<think>`, a prefix that starts with its own `<think>` is appended without a second one."""
    from rtool.generate.core import render_prompts

    tokenizer = tokenizer_of(models["r1"])
    question, reasoning, _ = QUESTIONS[0]
    conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": f"<think>\n{reasoning}"}]
    [ids] = render_prompts(tokenizer, [conversation])
    assert tokenizer.decode(ids) == generation_prompt(tokenizer, question) + reasoning
