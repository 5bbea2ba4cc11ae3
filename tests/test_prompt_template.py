"""rtool distill --prompt-template: a Jinja template over the row's fields renders the user's turn, and
prompt_messages records the rendering; a field a row lacks, or a broken template, is one line and exit 2."""

import json

import pytest

from helpers import jsonl, last_error_line, run_in_process

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FLAGS = ["-n", 1, "--max-new-tokens", 4, "--batch-size", 2]
# LiteCoT-style: the instruction depends on the row's difficulty. The file ends with a newline (dropped by Jinja).
TEMPLATE = """{% if difficulty == "easy" %}Answer briefly.{% else %}Think it through step by step.{% endif %}

Problem: {{ problem }}
"""
ROWS = [{"id": "a", "problem": "What is 1 + 1?", "answer": "2", "difficulty": "easy"},
        {"id": "b", "problem": "What is 12 * 13?", "answer": "156", "difficulty": "hard"}]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def distill(capfd, tmp_path, model_dir, rows, template_text, *extra):
    data = write(tmp_path, "prompts.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    template = write(tmp_path, "prompt.j2", template_text)
    return run_in_process(capfd, "distill", "--teacher", model_dir, "-i", data, "--prompt-template", template,
                          *FLAGS, *extra)


def test_template_renders_the_user_turn_and_prompt_messages_record_it(capfd, tmp_path, tiny_model_dir):
    code, out, err = distill(capfd, tmp_path, tiny_model_dir, ROWS, TEMPLATE, "--no-system")
    assert code == 0, err
    traces = jsonl(out)
    assert [t["id"] for t in traces] == ["a", "b"]
    assert traces[0]["prompt_messages"] == [{"role": "user",
                                             "content": "Answer briefly.\n\nProblem: What is 1 + 1?"}]
    assert traces[1]["prompt_messages"] == [{"role": "user",
                                             "content": "Think it through step by step.\n\nProblem: What is 12 * 13?"}]


def test_template_follows_the_system_prompt(capfd, tmp_path, tiny_model_dir):
    code, out, err = distill(capfd, tmp_path, tiny_model_dir, ROWS[:1], "Q: {{ problem }}", "--system", "Be brief.")
    assert code == 0, err
    assert jsonl(out)[0]["prompt_messages"] == [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": "Q: What is 1 + 1?"}]


def test_missing_field_is_one_line_naming_the_row_and_field(capfd, tmp_path, tiny_model_dir):
    rows = [ROWS[0], {"id": "c", "problem": "What is 3 + 3?", "answer": "6"}]  # no difficulty
    code, out, err = distill(capfd, tmp_path, tiny_model_dir, rows, TEMPLATE)
    assert code == 2, err
    line = [line for line in err.splitlines() if line.startswith("rtool: error:")][-1]
    assert "prompts.jsonl:2" in line and "'difficulty'" in line and "prompt.j2" in line, line
    assert "Traceback" not in err


@pytest.mark.parametrize("text, fragment", [("{% if problem %}unclosed", "prompt.j2:1: not a valid Jinja template"),
                                            ("{{ problem.__class__.__mro__ }}", "prompts.jsonl:1")])
def test_broken_or_unsafe_template_is_refused(capfd, tmp_path, tiny_model_dir, text, fragment):
    code, out, err = distill(capfd, tmp_path, tiny_model_dir, ROWS, text)
    assert code == 2, err
    assert fragment in err and "Traceback" not in err, err
    assert out == ""


def test_runtime_error_in_the_template_names_the_row_and_the_template_line(capfd, tmp_path, tiny_model_dir):
    """`{{ 100 / n }}` fails for the second row only: one line naming that row and the template's line 2, exit 2
    (an uncaught ZeroDivisionError once exited 1 with a traceback naming neither)."""
    rows = [{"id": "a", "problem": "1 + 1?", "answer": "2", "n": 5},
            {"id": "b", "problem": "2 + 2?", "answer": "4", "n": 0}]
    code, out, err = distill(capfd, tmp_path, tiny_model_dir, rows, "Problem: {{ problem }}\nScale: {{ 100 / n }}\n")
    assert code == 2, err
    assert err.strip().splitlines()[-1] == (f"rtool: error: {tmp_path / 'prompts.jsonl'}:2: --prompt-template "
                                    f"{tmp_path / 'prompt.j2'}:2: ZeroDivisionError: division by zero")
    assert "Traceback" not in err and out == ""


def test_template_that_is_not_utf8_is_one_line_exit_2(capfd, tmp_path, tiny_model_dir):
    """Latin-1 text (an AttributeError inside rtool once exited 1): one line naming the file, before the teacher."""
    data = write(tmp_path, "prompts.jsonl", json.dumps(ROWS[0]) + "\n")
    template = tmp_path / "latin1.j2"
    template.write_bytes("Problème : {{ problem }}".encode("latin-1"))
    code, out, err = run_in_process(capfd, "distill", "--teacher", tiny_model_dir, "-i", data, "--prompt-template",
                                    template, *FLAGS)
    assert code == 2, err
    assert err.strip().splitlines() == [f"rtool: error: {template}: the prompt template is not UTF-8 text (byte 0xe8 "
                                        "at offset 5) (save it as UTF-8)"]
    assert out == ""


# LiteCoT: rows of an earlier distill run (the conversation their long trace answered, and the trace) rewritten.
ASKED = [{"role": "system", "content": "Please reason step by step."}, {"role": "user", "content": "What is 1 + 1?"}]
LONG = {"id": "a", "problem": "What is 1 + 1?", "answer": "2", "prompt_messages": ASKED,
        "completion": "Hmm, 1 + 1... wait, let me check. It is 2. \\boxed{2}", "difficulty": "easy"}
REWRITE = "Rewrite this solution concisely.\n\nProblem: {{ problem }}\n\nSolution: {{ completion }}\n"


def test_a_rewrite_trains_on_the_question_not_the_rewrite_prompt(capfd, tmp_path, tiny_model_dir):
    """The row records both conversations: prompt_messages the rewrite prompt sent (long trace included),
    question_messages the question the trace answers (the input's recorded conversation); sft's examples train the
    rewrite on the question (they once trained on the rewrite prompt), and --prompt-field prompt_messages on the
    rendering. An untemplated run over such rows writes no stale question_messages."""
    from rtool.grade.fields import FieldMap
    from rtool.io.models import load_tokenizer
    from rtool.io.records import Row
    from rtool.train.data import SFTExamples, tokenize_completion

    no_trace = {"id": "b", "problem": "What is 2 + 2?", "answer": "4", "completion": "4 \\boxed{4}"}
    code, out, err = distill(capfd, tmp_path, tiny_model_dir, [LONG, no_trace], REWRITE, "--system", "You rewrite.")
    assert code == 0, err
    rewritten = jsonl(out)
    sent = ("Rewrite this solution concisely.\n\nProblem: What is 1 + 1?\n\nSolution: Hmm, 1 + 1... wait, let me "
            "check. It is 2. \\boxed{2}")
    assert rewritten[0]["prompt_messages"] == [{"role": "system", "content": "You rewrite."},
                                               {"role": "user", "content": sent}]
    assert rewritten[0]["question_messages"] == ASKED
    # A row without a recorded conversation: its prompt field, after the system prompt this run sent.
    assert rewritten[1]["question_messages"] == [{"role": "system", "content": "You rewrite."},
                                                 {"role": "user", "content": "What is 2 + 2?"}]

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")
    rows = [Row({**r, "correct": True}, "concise.jsonl", i + 1) for i, r in enumerate(rewritten)]
    (example, _) = SFTExamples(FieldMap(), max_length=4096)(rows, tokenizer)
    assert example["input_ids"] == tokenize_completion(tokenizer, ASKED, rewritten[0]["completion"])[0]
    (example, _) = SFTExamples(FieldMap("prompt_messages"), max_length=4096)(rows, tokenizer)
    assert example["input_ids"] == tokenize_completion(tokenizer, rewritten[0]["prompt_messages"],
                                                       rewritten[0]["completion"])[0]

    again = write(tmp_path, "concise.jsonl", out)
    code, out, err = run_in_process(capfd, "distill", "--teacher", tiny_model_dir, "-i", again, "--no-system", *FLAGS)
    assert code == 0, err
    assert [("question_messages" in r, r["prompt_messages"][-1]["content"]) for r in jsonl(out)] == [
        (False, "What is 1 + 1?"), (False, "What is 2 + 2?")]
