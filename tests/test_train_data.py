"""Rows -> training examples (rtool.train.data, rtool.train.recipes): which conversation a row trains on, its completion,
the length policy, and the token ids the sft trainer actually sees, compared with what a teacher was sent."""

import logging

import pytest

from rtool.errors import UserError
from rtool.grade.fields import FieldMap
from rtool.io.records import Row
from rtool.generate.traces import REASONING_SYSTEM_PROMPT
from rtool.train.data import SFTExamples, completion_text, fit_length, prompt_messages

RECORDED = [{"role": "system", "content": "You are a careful tutor."}, {"role": "user", "content": "What is 2 + 3?"}]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from rtool.io.models import load_tokenizer

    return load_tokenizer(tiny_model_dir, padding_side="right")


def row(data, line=1):
    return Row(data, "t.jsonl", line)


@pytest.mark.parametrize("data, fields, system, expected, recorded", [
    # A recorded conversation is what the teacher saw: it wins over the system prompt, which it may lack.
    ({"prompt_messages": RECORDED, "problem": "What is 2 + 3?"}, FieldMap(), "Think.", RECORDED, True),
    ({"prompt_messages": RECORDED[1:], "problem": "2+3"}, FieldMap(), "Think.", RECORDED[1:], True),
    # Rows without one build it, with the system prompt first.
    ({"problem": "P"}, FieldMap(), "Think.", [{"role": "system", "content": "Think."},
                                              {"role": "user", "content": "P"}], False),
    ({"problem": "P", "prompt_messages": None}, FieldMap(), None, [{"role": "user", "content": "P"}], False),
    # Taken as recorded: a multiple-choice row's options are already in the recorded user turn.
    ({"prompt_messages": [{"role": "user", "content": "Which?\n\nA. x\nB. y"}], "question": "Which?",
      "options": {"A": "x", "B": "y"}}, FieldMap(), None, [{"role": "user", "content": "Which?\n\nA. x\nB. y"}],
     True),
    # A prompt that is already a conversation (TRL's conversational rows) is taken as it is: no system prompt added.
    ({"prompt": RECORDED[1:], "completion": [{"role": "assistant", "content": "5"}]}, FieldMap(), "Think.",
     RECORDED[1:], True),
    ({"messages": [*RECORDED, {"role": "assistant", "content": "5"}]}, FieldMap(), "Think.", RECORDED, True),
    # An explicit --prompt-field names the prompt, whatever the row records.
    ({"prompt_messages": RECORDED, "question": "Q"}, FieldMap(prompt_field="question"), None,
     [{"role": "user", "content": "Q"}], False),
    # A --prompt-template row (a LiteCoT rewrite) trains on the question it answers, not the rewrite prompt sent;
    # --prompt-field prompt_messages names the rendering.
    ({"prompt_messages": [{"role": "user", "content": "Rewrite: ..."}], "question_messages": RECORDED,
      "problem": "What is 2 + 3?"}, FieldMap(), "Think.", RECORDED, True),
    ({"prompt_messages": [{"role": "user", "content": "Rewrite: ..."}], "question_messages": RECORDED},
     FieldMap(prompt_field="prompt_messages"), None, [{"role": "user", "content": "Rewrite: ..."}], True),
])
def test_prompt_messages_prefers_the_recorded_conversation(data, fields, system, expected, recorded):
    assert prompt_messages(row(data), fields, system) == (expected, recorded)


@pytest.mark.parametrize("value, message", [
    ([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
     "t.jsonl:3: prompt_messages must end with the user's turn, got 'assistant'"),
    ([{"role": "user"}], "t.jsonl:3: prompt_messages[0] is not a message {role, content}"),
    (7, "t.jsonl:3: field 'prompt_messages' must be a non-empty list of messages, got int"),
    ([], "t.jsonl:3: field 'prompt_messages' must be a non-empty list of messages, got an empty list"),
])
def test_bad_prompt_messages_name_file_line_and_field(value, message):
    with pytest.raises(UserError) as error:
        prompt_messages(row({"prompt_messages": value, "problem": "P"}, line=3), FieldMap(), None)
    assert error.value.render() == message
    with pytest.raises(UserError) as error:
        prompt_messages(row({"question_messages": value, "prompt_messages": RECORDED}, line=3), FieldMap(), None)
    assert error.value.render() == message.replace("prompt_messages", "question_messages")


def test_completion_text_formats():
    fields = FieldMap()
    assert completion_text(row({"problem": "P1", "solution": "S1 \\boxed{1}", "answer": "1"}), fields) == \
        "S1 \\boxed{1}"
    assert completion_text(row({"question": "Q2", "completion": "C2"}), fields) == "C2"
    assert completion_text(row({"messages": [{"role": "user", "content": "Q"},
                                             {"role": "assistant", "content": "A4"}]}), fields) == "A4"
    with pytest.raises(UserError, match=r"t.jsonl:9: empty completion"):
        completion_text(row({"prompt": "Q", "completion": " "}, line=9), fields)


@pytest.mark.parametrize("length, truncation, expected", [
    (4, "drop", ([1, 2, 3, 4], [0, 0, 1, 1])),
    (3, "drop", None),  # too long: not trained on
    (3, "keep-start", ([1, 2, 3], [0, 0, 1])),  # cut at the end, as TRL does
    (2, "keep-start", None),  # no completion token left
])
def test_fit_length(length, truncation, expected):
    assert fit_length([1, 2, 3, 4], [0, 0, 1, 1], length, truncation) == expected


def test_sft_examples_filter_count_and_apply_the_length_policy(tokenizer, caplog):
    long = "9+9 is " + "very " * 60 + "\\boxed{18}"
    rows = [row({"problem": "1+1?", "completion": "2", "correct": True}, 1),
            row({"prompt": "1+2?", "completion": "4", "correct": False}, 2),
            row({"prompt_messages": RECORDED, "completion": "5", "correct": None}, 3),
            row({"problem": "9+9?", "completion": long}, 4)]

    dropping = SFTExamples(FieldMap(), system="Think.", max_length=128)
    kept = list(dropping(rows, tokenizer))
    assert len(kept) == 2 and all(len(e["input_ids"]) <= 128 for e in kept)
    c = dropping.counts
    assert (c.read, c.kept, c.incorrect, c.recorded, c.too_long, c.no_completion) == (4, 2, 1, 1, 1, 0)
    with caplog.at_level(logging.INFO, logger="rtool"):
        dropping.report()
    assert "sft: 2 training rows of 4 read, skipped 1 with correct == false" in caplog.text
    assert "1 rows train on the conversation they record (prompt_messages or a conversational prompt), 1 bare " \
        "prompts get the system prompt 'Think.'" in caplog.text
    assert "dropped 1 rows longer than --max-length 128 tokens" in caplog.text

    cutting = SFTExamples(FieldMap(), system="Think.", max_length=128, truncation="keep-start",
                          include_incorrect=True)
    kept = list(cutting(rows, tokenizer))
    assert len(kept) == 4 and len(kept[3]["input_ids"]) == 128
    # The old behaviour, on request: the answer and the end of turn are cut off.
    text = tokenizer.decode(kept[3]["input_ids"])
    assert text.endswith("very ve") and "boxed" not in text and not text.endswith("<|im_end|>\n")
    assert (cutting.counts.too_long, cutting.counts.kept) == (1, 4)

    with pytest.raises(UserError, match="--max-length must be at least 1"):
        SFTExamples(max_length=0)
    # A string is not a grade ("no" is truthy): refused at its line, not trained on as a positive.
    with pytest.raises(UserError) as error:
        list(SFTExamples(FieldMap())([row({"problem": "1+1?", "completion": "2", "correct": "no"}, 5)], tokenizer))
    assert error.value.render() == "t.jsonl:5: field 'correct' must be true, false or null, got 'no'"


def sft_trainer(tmp_path, tiny_model_dir, tokenizer, rows, system):
    """The sft recipe's trainer on `rows`, as run_training builds it (no training)."""
    from datasets import Dataset

    from rtool.io.models import load_model
    from rtool.train.recipes import sft_recipe
    from rtool.train.core import Hyperparams, trainer_args
    from rtool.train.precision import precision

    recipe = sft_recipe(SFTExamples(FieldMap(), system=system, max_length=256))
    dataset = Dataset.from_list(list(recipe.examples(rows, tokenizer)), features=recipe.features())
    model, _ = load_model(tiny_model_dir, device="cpu", for_training=True)
    return recipe.build_trainer(model=model, tokenizer=tokenizer, dataset=dataset,
                                args=trainer_args(Hyperparams(out=tmp_path), precision("auto")), peft_config=None,
                                callbacks=[])


def test_sft_trains_on_the_tokens_the_teacher_was_given(tmp_path, tiny_model_dir, tokenizer):
    """A distill row records the conversation sent to the teacher (here with its own system prompt). The ids the
    sft trainer feeds the student start with exactly that conversation rendered for generation, whatever --system
    says; rows without it get the default system prompt; the loss covers the completion and its end of turn."""
    from rtool.generate.core import render_prompts

    rows = [row({"problem": "What is 2 + 3?", "prompt_messages": RECORDED, "completion": "2+3=\\boxed{5}"}, 1),
            row({"problem": "What is 1 + 2?", "solution": "1+2=\\boxed{3}"}, 2)]
    trainer = sft_trainer(tmp_path, tiny_model_dir, tokenizer, rows, REASONING_SYSTEM_PROMPT)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])

    teacher_saw = render_prompts(tokenizer, [RECORDED])[0]
    text = tokenizer.apply_chat_template(RECORDED, tokenize=False, add_generation_prompt=True)
    assert teacher_saw == tokenizer(text, add_special_tokens=False)["input_ids"]
    default = render_prompts(tokenizer, [[{"role": "system", "content": REASONING_SYSTEM_PROMPT},
                                          {"role": "user", "content": "What is 1 + 2?"}]])[0]
    for index, (prompt, completion) in enumerate([(teacher_saw, "2+3=\\boxed{5}<|im_end|>\n"),
                                                 (default, "1+2=\\boxed{3}<|im_end|>\n")]):
        ids, labels = batch["input_ids"][index].tolist(), batch["labels"][index].tolist()
        assert ids[:len(prompt)] == prompt
        assert labels[:len(prompt)] == [-100] * len(prompt)
        trained = [t for t in labels if t != -100]
        assert tokenizer.decode(trained) == completion  # the completion and the end of its turn, nothing else
        assert ids[len(prompt):len(prompt) + len(trained)] == trained

    # --no-system: a row without prompt_messages gets no system prompt; a recorded one is unchanged.
    trainer = sft_trainer(tmp_path, tiny_model_dir, tokenizer, rows, None)
    bare = render_prompts(tokenizer, [[{"role": "user", "content": "What is 1 + 2?"}]])[0]
    assert trainer.train_dataset[1]["input_ids"][:len(bare)] == bare
    assert trainer.train_dataset[0]["input_ids"][:len(teacher_saw)] == teacher_saw


def test_tokenization_equals_trl_on_conversational_rows(tmp_path, tiny_model_dir, tokenizer):
    """rtool tokenizes rows itself (to count and drop over-long ones before training); the ids and labels must be
    what TRL's SFTTrainer makes of the same prompt/completion conversation, so runs before and after compare."""
    from datasets import Dataset
    from trl import SFTTrainer

    from rtool.io.models import load_model
    from rtool.train.recipes import sft_config
    from rtool.train.core import Hyperparams, trainer_args
    from rtool.train.precision import precision

    rows = [row({"prompt_messages": RECORDED, "completion": "2+3=\\boxed{5}"}, 1),
            row({"problem": "What is 1 + 2?", "solution": "1+2=\\boxed{3}"}, 2)]
    ours = sft_trainer(tmp_path, tiny_model_dir, tokenizer, rows, "Think.").train_dataset
    conversations = [{"prompt": prompt_messages(r, FieldMap(), "Think.")[0],
                      "completion": [{"role": "assistant", "content": completion_text(r, FieldMap())}]} for r in rows]
    model, _ = load_model(tiny_model_dir, device="cpu", for_training=True)
    args = sft_config(trainer_args(Hyperparams(out=tmp_path), precision("auto")), max_length=256, packing=False)
    theirs = SFTTrainer(model, args, train_dataset=Dataset.from_list(conversations),
                        processing_class=tokenizer).train_dataset
    for a, b in zip(ours, theirs, strict=True):
        assert (a["input_ids"], a["labels"]) == (b["input_ids"], b["labels"])
