"""rtool prm-score and rtool.prm.score: step splitting, aggregation, each PRM convention against its model card's recipe
and against one pass per prefix, padding and batch invariance, the Fin-PRM combination, the CLI and its bad input.

Exact comparisons pin the CPU and float32; the one test on the default device and dtype (bf16 on a GPU) compares
with a bf16 tolerance."""

import json
import math
import shutil
import subprocess
import sys

import pytest

from helpers import jsonl, last_error_line, run_rtool
from prm_models import build_prm
from rtool.errors import UserError
from rtool.prm.score import (AGGREGATIONS, PRMScorer, aggregate, check_lam, detect_format, final_score, log_aggregate,
                       parse_step_sep, split_steps)

TOL = 1e-5  # float32 on the CPU: the same math in another batch shape differs by rounding only

QUESTION = "What is 2 + 3 * 4?"
COMPLETIONS = [
    "First, multiply 3 by 4: 3 * 4 = 12.\n\nThen add 2: 2 + 12 = 14.\n\nThe answer is \\boxed{14}.",
    "Add first: 2 + 3 = 5.\n\nThen 5 * 4 = 20.\n\n\n\nSo \\boxed{20}.",  # "\n\n\n\n": an empty step, dropped
    "Just \\boxed{14}.",
    "Step one.\n\nStep two is longer than step one, by a good margin of characters.\n\nThree.\n\nFour.\n\n"
    "Five.\n\nSix: 14.\n\nSeven.\n\nEight, so \\boxed{14}.",
]
MESSAGES = [{"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
            {"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def prm_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("prms")
    dirs = {
        "qwen-prm": build_prm("qwen-prm", root / "qwen"),
        "math-shepherd": build_prm("math-shepherd", root / "shepherd"),
        "orm": build_prm("orm", root / "orm1", labels=1),
        "orm2": build_prm("orm", root / "orm2", labels=2, seed=1),
        "causal-lm": build_prm("causal-lm", root / "lm"),
        "qwen-no-sep": build_prm("qwen-prm", root / "qwen-no-sep", extra_tokens=[]),
    }
    # Qwen2.5-Math-PRM's config: its own class, loaded through auto_map only with trust_remote_code.
    remote = root / "remote"
    shutil.copytree(dirs["qwen-prm"], remote)
    config = json.loads((remote / "config.json").read_text())
    config.update(architectures=["Qwen2ForProcessRewardModel"],
                  auto_map={"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"})
    (remote / "config.json").write_text(json.dumps(config))
    # A causal LM whose config names no architecture: --format orm would load it with a random head.
    bare = root / "bare"
    shutil.copytree(dirs["causal-lm"], bare)
    config = json.loads((bare / "config.json").read_text())
    config.pop("architectures", None)
    (bare / "config.json").write_text(json.dumps(config))
    dirs.update(remote=remote, bare=bare)
    return dirs


_SCORERS = {}


def scorer(prm_dirs, kind, **kwargs):
    key = (kind, tuple(sorted(kwargs.items())))
    if key not in _SCORERS:
        _SCORERS[key] = PRMScorer.load(prm_dirs[kind], device="cpu", dtype="float32", **kwargs)
    return _SCORERS[key]


# Pure functions

@pytest.mark.parametrize("text, sep, steps", [
    ("a\n\nb\n\nc", "\n\n", ["a", "b", "c"]),
    ("  a \n\n\n\n b\n\n", "\n\n", ["a", "b"]),  # stripped; empty steps dropped
    ("a\nb\n\nc", "\n", ["a", "b", "c"]),
    ("one step", "\n\n", ["one step"]),
    ("", "\n\n", []),
    (" \n\n \n\n", "\n\n", []),
    ("x ки y ки", "ки", ["x", "y"]),
])
def test_split_steps(text, sep, steps):
    assert split_steps(text, sep) == steps


@pytest.mark.parametrize("agg, expected", [("min", 0.2), ("prod", 0.9 * 0.2 * 0.5), ("last", 0.5),
                                           ("mean", (0.9 + 0.2 + 0.5) / 3)])
def test_aggregate(agg, expected):
    assert aggregate([0.9, 0.2, 0.5], agg) == pytest.approx(expected, abs=1e-12)


def test_aggregate_refuses_unknown_names_and_no_steps():
    with pytest.raises(UserError, match="unknown --agg 'median'.*valid: min, prod, last, mean"):
        aggregate([0.5], "median")
    with pytest.raises(ValueError):
        aggregate([], "min")
    assert AGGREGATIONS == ("min", "prod", "last", "mean")


@pytest.mark.parametrize("lam, trajectory, expected", [
    (1.0, 0.1, 0.2),                    # steps only: the trajectory score does not count
    (0.0, 0.1, 0.1),                    # trajectory only
    (0.25, 0.1, 0.25 * 0.2 + 0.75 * 0.1),
    (0.5, None, 0.5 * 0.2 + 0.5 * 0.5),  # no ORM: the last step's score is the trajectory score
    (0.0, None, 0.5),
])
def test_final_score_combines_step_aggregate_and_trajectory(lam, trajectory, expected):
    assert final_score([0.9, 0.2, 0.5], "min", lam, trajectory) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan")])
def test_lam_outside_0_1_is_refused(lam):
    with pytest.raises(UserError, match=r"--lam must be in \[0, 1\]"):
        check_lam(lam)


@pytest.mark.parametrize("typed, sep", [("\\n\\n", "\n\n"), ("\\n", "\n"), ("\\t|", "\t|"), ("ки", "ки"),
                                        ("a\\\\nb", "a\\nb"), ("\n\n", "\n\n"), ("\\r\\n\\r\\n", "\r\n\r\n")])
def test_parse_step_sep(typed, sep):
    assert parse_step_sep(typed) == sep


def test_windows_blank_lines_split_and_unknown_escapes_are_refused():
    assert split_steps("x = 1\r\n\r\ny = 2\r\n\r\n", parse_step_sep("\\r\\n\\r\\n")) == ["x = 1", "y = 2"]
    for typed in ("\\x0a", "a\\", "\\N", "\\s"):
        with pytest.raises(UserError, match=r"--step-sep .*: unknown escape"):
            parse_step_sep(typed)


def test_prod_of_a_long_trace_ranks_in_log_space():
    # 0.4 ** 1100 and 0.5 ** 1100 are below the smallest float: both products are 0.0, their logs still order them.
    low, high = [0.4] * 1100, [0.5] * 1100
    assert aggregate(low, "prod") == aggregate(high, "prod") == 0.0
    assert log_aggregate(high, "prod") == pytest.approx(1100 * math.log(0.5))
    assert log_aggregate(low, "prod") < log_aggregate(high, "prod")
    assert log_aggregate([0.9, 0.0], "prod") == -math.inf
    for agg in ("min", "last", "mean"):
        assert log_aggregate([0.9, 0.2, 0.5], agg) == pytest.approx(math.log(aggregate([0.9, 0.2, 0.5], agg)))


# Conventions: what each model card computes, step by step

def card_qwen_prm(model_dir, messages, steps):
    """Qwen2.5-Math-PRM-7B's card: steps joined and ended by <extra_0> in the assistant turn, the chat template,
    softmax over the 2 labels at each <extra_0>, index 1."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    text = tok.apply_chat_template(messages + [{"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}],
                                   tokenize=False, add_generation_prompt=False)
    ids = tok.encode(text, return_tensors="pt")
    with torch.no_grad():
        probs = model(input_ids=ids)[0].softmax(-1)
    sep = tok.encode("<extra_0>", add_special_tokens=False)[0]
    return probs[ids == sep][:, 1].tolist()


def card_math_shepherd(model_dir, question, steps):
    """math-shepherd-mistral-7b-prm's card: "question step1 ки\\nstep2 ки", softmax over the '+' and '-' logits at
    each tag position, index 0."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    good, bad = tok.encode("+", add_special_tokens=False)[-1], tok.encode("-", add_special_tokens=False)[-1]
    tag = tok.encode(" ки", add_special_tokens=False)[-1]
    ids = tok.encode(f"{question} " + "\n".join(f"{step} ки" for step in steps), return_tensors="pt")
    with torch.no_grad():
        scores = model(ids).logits[:, :, [good, bad]].softmax(-1)[:, :, 0]
    return scores[ids == tag].tolist()


def card_orm(model_dir, messages, completion):
    """A sequence-classification reward model as TRL and Skywork-Reward read it: the chat template, the pooled logit
    (sigmoid for 1 label, softmax index 1 for 2)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    text = tok.apply_chat_template(messages + [{"role": "assistant", "content": completion}], tokenize=False)
    with torch.no_grad():
        logits = model(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0]
    return logits.sigmoid()[0].item() if logits.numel() == 1 else logits.softmax(-1)[1].item()


@pytest.mark.parametrize("kind", ["qwen-prm", "math-shepherd"])
def test_one_pass_equals_the_card_recipe_and_one_pass_per_prefix(prm_dirs, kind):
    prm = scorer(prm_dirs, kind)
    assert prm.format == kind
    ours = prm.score([MESSAGES] * len(COMPLETIONS), COMPLETIONS)
    for completion, scores in zip(COMPLETIONS, ours):
        steps = split_steps(completion)
        assert len(scores) == len(steps)
        if kind == "qwen-prm":
            card = card_qwen_prm(prm_dirs[kind], MESSAGES, steps)
        else:
            card = card_math_shepherd(prm_dirs[kind], QUESTION, steps)
        assert scores == pytest.approx(card, abs=TOL)
        # One pass per prefix: the last score of steps[:k] is step k's score in the single pass.
        prefixes = ["\n\n".join(steps[:k]) for k in range(1, len(steps) + 1)]
        per_prefix = [s[-1] for s in prm.score([MESSAGES] * len(prefixes), prefixes, batch_size=1)]
        assert scores == pytest.approx(per_prefix, abs=TOL)
    # The scores say something about the position they were read at: steps differ by far more than rounding.
    longest = max(ours, key=len)
    assert max(longest) - min(longest) > 100 * TOL


@pytest.mark.parametrize("kind", ["orm", "orm2"])
def test_orm_is_one_score_per_completion_as_the_model_pools_it(prm_dirs, kind):
    orm = scorer(prm_dirs, kind)
    assert orm.format == "orm"
    ours = orm.score([MESSAGES] * len(COMPLETIONS), COMPLETIONS)
    assert [len(s) for s in ours] == [1] * len(COMPLETIONS)
    assert [s[0] for s in ours] == pytest.approx([card_orm(prm_dirs[kind], MESSAGES, c) for c in COMPLETIONS],
                                                 abs=TOL)


def test_orm_reads_each_rows_own_last_token_even_when_it_is_the_pad_token(prm_dirs):
    # transformers pools at the last token that is not pad_token_id: a pad id equal to the template's last token
    # (pad == eos in many tokenizers) would pool elsewhere. rtool reads the head's per-token logits itself.
    import torch

    orm = PRMScorer.load(prm_dirs["orm"], device="cpu", dtype="float32")
    before = [s[0] for s in orm.score([MESSAGES] * len(COMPLETIONS), COMPLETIONS, batch_size=4)]
    orm.model.config.pad_token_id = orm.tokenizer.convert_tokens_to_ids("\n")  # the last token of every row
    after = [s[0] for s in orm.score([MESSAGES] * len(COMPLETIONS), COMPLETIONS, batch_size=4)]
    assert after == pytest.approx(before, abs=TOL)
    with torch.no_grad():  # what the model's own pooling gives now: another token's score
        pooled = orm.model(torch.tensor([orm.encode(MESSAGES, COMPLETIONS[0]).ids])).logits.sigmoid().item()
    assert abs(pooled - before[0]) > 100 * TOL


@pytest.mark.parametrize("kind", ["qwen-prm", "math-shepherd", "orm"])
def test_padding_and_batch_composition_do_not_change_a_score(prm_dirs, kind):
    prm = scorer(prm_dirs, kind)
    alone = [prm.score([MESSAGES], [c], batch_size=1)[0] for c in COMPLETIONS]
    together = prm.score([MESSAGES] * len(COMPLETIONS), COMPLETIONS, batch_size=len(COMPLETIONS))
    # In reverse order, mixed with a long completion, in pairs: other padding widths and batch neighbours.
    long = "A much longer completion. " * 20 + "\n\n" + "More steps here. " * 10
    mixed = prm.score([MESSAGES] * (len(COMPLETIONS) + 1), [long, *reversed(COMPLETIONS)], batch_size=2)[1:][::-1]
    for a, b, c in zip(alone, together, mixed):
        assert b == pytest.approx(a, abs=TOL) and c == pytest.approx(a, abs=TOL)


def test_all_step_scores_come_from_one_forward_pass_per_batch(prm_dirs):
    prm = PRMScorer.load(prm_dirs["qwen-prm"], device="cpu", dtype="float32")
    calls = []
    prm.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                        with_kwargs=True)
    scores = prm.score([MESSAGES] * 4, COMPLETIONS, batch_size=2)
    assert [len(s) for s in scores] == [3, 3, 1, 8]
    assert len(calls) == 2 and all(shape[0] == 2 for shape in calls)
    # Batches are formed by length: the longest two completions share a batch.
    lengths = sorted(len(prm.encode(MESSAGES, c).ids) for c in COMPLETIONS)
    assert sorted(shape[1] for shape in calls) == [lengths[1], lengths[3]]


def test_completion_without_steps_scores_nothing_and_rewards_fill_in(prm_dirs):
    prm = scorer(prm_dirs, "qwen-prm")
    scores = prm.score([MESSAGES, QUESTION], ["\n\n  \n\n", COMPLETIONS[0]])
    assert scores[0] == [] and len(scores[1]) == 3
    assert prm.rewards([MESSAGES, MESSAGES], ["", COMPLETIONS[0]], empty=-1.0) == \
        pytest.approx([-1.0, min(prm.score([MESSAGES], [COMPLETIONS[0]])[0])], abs=TOL)


def test_rewards_mix_in_an_orm_with_lam(prm_dirs):
    prm, orm = scorer(prm_dirs, "math-shepherd"), scorer(prm_dirs, "orm")
    steps = prm.score([MESSAGES] * 2, COMPLETIONS[:2])
    trajectory = [s[0] for s in orm.score([MESSAGES] * 2, COMPLETIONS[:2])]
    expected = [0.3 * (sum(s) / len(s)) + 0.7 * t for s, t in zip(steps, trajectory)]
    got = prm.rewards([MESSAGES] * 2, COMPLETIONS[:2], agg="mean", lam=0.3, orm=orm)
    assert got == pytest.approx(expected, abs=TOL)


def test_sequences_longer_than_the_model_takes_are_scored_whole_and_counted(tmp_path):
    # A PRM trained for 48 positions, and completions of ~100-200 tokens: every step is scored, past position 48
    # too, in one pass over the whole sequence as the card scores it (nothing cut), and each such row is counted.
    short = build_prm("qwen-prm", tmp_path / "short", max_position_embeddings=48)
    prm = PRMScorer.load(short, device="cpu", dtype="float32")
    assert prm.max_length == 48
    got = prm.score([MESSAGES] * 2, COMPLETIONS[:2])
    assert prm.too_long == 2
    for completion, scores in zip(COMPLETIONS[:2], got):
        assert len(prm.encode(MESSAGES, completion).ids) > 2 * 48
        assert len(scores) == 3
        assert scores == pytest.approx(card_qwen_prm(short, MESSAGES, split_steps(completion)), abs=TOL)


def test_default_device_and_dtype_follow_the_documented_policy(prm_dirs):
    import torch

    prm = PRMScorer.load(prm_dirs["qwen-prm"])  # --device auto --dtype auto
    parameter = next(prm.model.parameters())
    # The documented table (--dtype help): bf16 on GPUs that support it, fp16 on older ones, fp32 on the CPU.
    if torch.cuda.is_available():
        expected = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16), "cuda"
    else:
        expected = torch.float32, "cpu"
    assert (parameter.dtype, parameter.device.type) == expected
    if parameter.dtype == torch.float32:
        return  # the CPU: the fp32 reference below would be compared with itself
    reference = scorer(prm_dirs, "qwen-prm").score([MESSAGES] * 2, COMPLETIONS[:2])
    got = prm.score([MESSAGES] * 2, COMPLETIONS[:2])
    for a, b in zip(got, reference):
        assert a == pytest.approx(b, abs=2e-2)
        assert a != pytest.approx(b, abs=1e-7)  # half precision really ran


# Which convention a model follows

@pytest.mark.parametrize("arch, tokenizer_of, expected", [
    ("LlamaForTokenClassification", "qwen-prm", "qwen-prm"),
    ("Qwen2ForProcessRewardModel", "qwen-prm", "qwen-prm"),
    ("MistralForCausalLM", "math-shepherd", "math-shepherd"),
    ("Qwen2ForSequenceClassification", "orm", "orm"),
    ("LlamaForCausalLM", "causal-lm", "fits no PRM convention: a causal LM"),  # a chat model: no 'ки' tag
    ("BertModel", "orm", "fits no PRM convention"),
    (None, "orm", "names no architecture"),
])
def test_detect_format(prm_dirs, arch, tokenizer_of, expected):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(prm_dirs[tokenizer_of])
    architectures = [arch] if arch else []
    if expected in ("qwen-prm", "math-shepherd", "orm"):
        assert detect_format(architectures, tokenizer) == expected
    else:
        with pytest.raises(UserError, match=expected):
            detect_format(architectures, tokenizer)


@pytest.mark.parametrize("kind, kwargs, fragments", [
    ("causal-lm", {}, ["fits no PRM convention", "LlamaForCausalLM", "no single 'ки' step-tag token"]),
    ("qwen-no-sep", {}, ["has no '<extra_0>' token"]),
    ("remote", {}, ["Qwen2ForProcessRewardModel", "--trust-remote-code"]),
    ("math-shepherd", {"format": "orm"}, ["--format orm reads a *ForSequenceClassification model",
                                          "is a LlamaForCausalLM"]),
    ("bare", {"format": "orm"}, ["lacks", "weights that orm needs", "random"]),
    ("qwen-prm", {"format": "nope"}, ["unknown --format 'nope'", "valid: auto, qwen-prm, math-shepherd, orm"]),
])
def test_models_that_fit_no_convention_are_refused(prm_dirs, kind, kwargs, fragments):
    with pytest.raises(UserError) as caught:
        PRMScorer.load(prm_dirs[kind], device="cpu", dtype="float32", **kwargs)
    for fragment in fragments:
        assert fragment in caught.value.render()


# The command

def rows_text(rows):
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def prm_score(model, *extra, input=None):
    return run_rtool("prm-score", "--prm", model, "--device", "cpu", "--dtype", "float32", *extra, input=input)


def test_cli_streams_rows_in_order_with_their_fields_and_step_scores(prm_dirs):
    # 20 rows of mixed lengths at --batch-size 2: two read-ahead windows of 16, batches sorted by length.
    completions = [COMPLETIONS[i % 4][: 40 + 7 * i] + "\n\nok" for i in range(19)]
    rows = [{"id": f"q{i}", "problem": QUESTION, "completion": c, "answer": "14", "keep": [i, "ж"]}
            for i, c in enumerate(completions)]
    # A distill row: its recorded conversation is what the PRM reads (no system prompt added).
    recorded = [{"role": "user", "content": "Compute 2 + 3 * 4."}]
    rows.insert(3, {"id": "r", "prompt_messages": recorded, "problem": QUESTION, "completion": completions[0]})
    result = prm_score(prm_dirs["qwen-prm"], "--batch-size", "2", input=rows_text(rows))
    assert result.returncode == 0, result.stderr.decode()
    out = jsonl(result.stdout)
    assert [row["id"] for row in out] == [row["id"] for row in rows]
    prm = scorer(prm_dirs, "qwen-prm")
    expected = prm.score([recorded if "prompt_messages" in row else MESSAGES for row in rows],
                         [row["completion"] for row in rows])
    for row, source, scores in zip(out, rows, expected):
        assert {k: row[k] for k in source} == source  # every input field kept as it was
        assert row["step_scores"] == pytest.approx(scores, abs=TOL)
        assert row["score"] == min(row["step_scores"])
        assert row["prm_scoring"] == {"prm": str(prm_dirs["qwen-prm"]), "format": "qwen-prm", "step_sep": "\n\n",
                                      "agg": "min", "lam": 1.0, "orm": None, "system": MESSAGES[0]["content"]}
    assert out[3]["step_scores"] != pytest.approx(out[0]["step_scores"], abs=TOL)  # another conversation
    steps = sum(len(split_steps(row["completion"])) for row in rows)
    assert f"prm-score: 20 rows, {steps} steps" in result.stderr.decode()


def test_cli_orm_lam_agg_and_step_sep(prm_dirs, tmp_path):
    rows = [{"id": "a", "question": QUESTION, "completion": "x = 3 * 4 = 12 | y = 2 + 12 = 14 | \\boxed{14}"},
            {"id": "b", "question": QUESTION, "completion": "\\boxed{20}"}]
    out = tmp_path / "scored.jsonl"
    result = prm_score(prm_dirs["math-shepherd"], "--orm", prm_dirs["orm"], "--lam", "0.25", "--agg", "mean",
                       "--step-sep", " | ", "--no-system", "-o", out, input=rows_text(rows))
    assert result.returncode == 0, result.stderr.decode()
    scored = jsonl(out.read_text())
    assert [len(row["step_scores"]) for row in scored] == [3, 1]
    orm = scorer(prm_dirs, "orm")
    for row in scored:
        messages = [{"role": "user", "content": QUESTION}]  # --no-system
        assert row["orm_score"] == pytest.approx(orm.score([messages], [row["completion"]])[0][0], abs=TOL)
        mean = sum(row["step_scores"]) / len(row["step_scores"])
        assert row["score"] == pytest.approx(0.25 * mean + 0.75 * row["orm_score"], abs=1e-12)


def test_cli_prod_writes_the_log_score(prm_dirs):
    # A long trace's product is tiny (0.0 past ~1,100 steps of 0.5, see above); log_score keeps the ranking.
    rows = [{"id": "long", "problem": QUESTION, "completion": "\n\n".join(["a"] * 200)},
            {"id": "short", "problem": QUESTION, "completion": "x = 12\n\ny = 14"}]
    result = prm_score(prm_dirs["qwen-prm"], "--agg", "prod", input=rows_text(rows))
    assert result.returncode == 0, result.stderr.decode()
    for row in jsonl(result.stdout):
        assert row["log_score"] == pytest.approx(math.fsum(math.log(s) for s in row["step_scores"]), rel=1e-12)
        assert row["score"] == pytest.approx(math.exp(row["log_score"]), rel=1e-9, abs=1e-300)


def constant_prm(out_dir, p):
    """A qwen-prm that scores every step `p`: its head reads nothing (weights 0), its bias gives softmax [1 - p, p]."""
    import torch
    from transformers import AutoModelForTokenClassification

    path = build_prm("qwen-prm", out_dir)
    model = AutoModelForTokenClassification.from_pretrained(path)
    with torch.no_grad():
        model.score.weight.zero_()
        model.score.bias.copy_(torch.tensor([0.0, math.log(p / (1 - p))]))
    model.save_pretrained(path, safe_serialization=True)
    return path


def test_cli_prod_of_700_steps_reads_0_and_bon_ranks_by_the_log(tmp_path):
    # Every step scores 0.3: 800 steps give 0.3 ** 800 and 700 give 0.3 ** 700, both 0.0 in floats. The shorter
    # trace (sample 1, the right answer) is the better product: bon must see it through log_score.
    prm = constant_prm(tmp_path / "prm", 0.3)
    lengths, answers = [800, 700, 800], ["3", "7", "3"]
    rows = [{"id": "q", "problem": "?", "answer": "7", "sample": i,
             "completion": "\n\n".join(["a"] * (n - 1) + [f"\\boxed{{{a}}}"])}
            for i, (n, a) in enumerate(zip(lengths, answers))]
    result = prm_score(prm, "--agg", "prod", "--no-system", input=rows_text(rows))
    assert result.returncode == 0, result.stderr.decode()
    scored = jsonl(result.stdout)
    for row, n in zip(scored, lengths):
        assert row["score"] == 0.0 and row["prm_scoring"]["agg"] == "prod"
        assert row["log_score"] == pytest.approx(n * math.log(0.3), rel=1e-5)
    for method in ("naive", "weighted"):
        bon = run_rtool("bon", "--method", method, input=result.stdout)
        assert bon.returncode == 0, bon.stderr.decode()
        [chosen] = jsonl(bon.stdout)
        assert chosen["sample"] == 1, method
        assert json.loads(run_rtool("eval", input=bon.stdout).stdout)["bon"]["3"]["accuracy"] == 1.0
    assert "3 rows have a product of step scores below the smallest float" in " ".join(result.stderr.decode().split())


def assert_clean_error(result, *fragments):
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    line = last_error_line(result)
    assert line.startswith("rtool: error: "), line
    for fragment in fragments:
        assert fragment in line, line


GOOD = {"id": "g", "problem": QUESTION, "completion": COMPLETIONS[0]}


NO_COMPLETION = ({"id": "b", "problem": QUESTION}, ["<stdin>:2:", "no completion field", "found: id, problem"])


@pytest.mark.parametrize("bad_row, fragments", [
    NO_COMPLETION,
    ({"id": "b", "text": "?", "completion": "a"}, ["<stdin>:2:", "no prompt field"]),
])
def test_a_bad_row_stops_the_run_after_the_rows_before_it(prm_dirs, bad_row, fragments):
    result = prm_score(prm_dirs["qwen-prm"], input=rows_text([GOOD, bad_row, GOOD]))
    assert_clean_error(result, *fragments)
    assert [row["id"] for row in jsonl(result.stdout)] == ["g"]  # stdout streams the rows before it


def test_a_bad_row_keeps_the_rows_before_it_in_the_file_and_resume_goes_on(prm_dirs, tmp_path):
    bad_row, fragments = NO_COMPLETION
    # -o FILE keeps the rows before a bad one, and --resume goes on from there once the row is fixed.
    out = tmp_path / "scored.jsonl"
    result = prm_score(prm_dirs["qwen-prm"], "-o", out, input=rows_text([GOOD, bad_row, GOOD]))
    assert_clean_error(result, *fragments)
    assert [row["id"] for row in jsonl(out.read_text())] == ["g"]
    fixed = {**GOOD, "id": "b"}
    result = prm_score(prm_dirs["qwen-prm"], "-o", out, "--resume", input=rows_text([GOOD, fixed, GOOD]))
    assert result.returncode == 0, result.stderr.decode()
    # The two rows keyed ("g", no sample) are two rows: the file held one, so one more is scored.
    assert [row["id"] for row in jsonl(out.read_text())] == ["g", "b", "g"]
    # An old file given --overwrite is started again at the first row scored; a run that scores none leaves it.
    old = tmp_path / "old.jsonl"
    old.write_text(rows_text([{**GOOD, "id": f"old{i}", "step_scores": [0.5], "score": 0.5} for i in range(32)]))
    before = old.read_bytes()
    result = prm_score(prm_dirs["qwen-prm"], "-o", old, "--overwrite", input=rows_text([bad_row, GOOD]))
    assert_clean_error(result, *fragments[1:])
    assert old.read_bytes() == before
    result = prm_score(prm_dirs["qwen-prm"], "-o", old, "--overwrite", input=rows_text([GOOD, bad_row, GOOD]))
    assert_clean_error(result, *fragments)
    assert [row["id"] for row in jsonl(old.read_text())] == ["g"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl", "scored.jsonl"]  # no temporary file


def test_a_bad_line_far_into_a_file_keeps_every_row_before_it(prm_dirs, tmp_path):
    # 40 rows at --batch-size 2 (windows of 16), then a line that is no JSON: rows 1..40 were scored and stay.
    source = tmp_path / "traces.jsonl"
    source.write_text(rows_text([{**GOOD, "id": f"q{i}", "sample": 0} for i in range(40)]) + "{oops\n")
    out = tmp_path / "scored.jsonl"
    result = prm_score(prm_dirs["qwen-prm"], "--batch-size", "2", "-i", source, "-o", out)
    assert_clean_error(result, f"{source}:41: malformed JSON")
    assert [row["id"] for row in jsonl(out.read_text())] == [f"q{i}" for i in range(40)]


def test_a_killed_run_keeps_its_rows_and_resume_scores_only_the_rest(prm_dirs, tmp_path):
    import os
    import signal
    import time

    from helpers import RTOOL

    rows = [{"id": f"q{i // 2}", "sample": i % 2, "problem": QUESTION, "completion": COMPLETIONS[i % 4]}
            for i in range(30)]
    source = tmp_path / "traces.jsonl"
    source.write_text(rows_text(rows))
    out = tmp_path / "scored.jsonl"
    flags = ["--prm", prm_dirs["qwen-prm"], "--device", "cpu", "--dtype", "float32", "--batch-size", "1"]
    # 20 rows on a stdin left open: two windows of 8 are scored and written, 4 rows wait for more input. Then kill -9.
    child = subprocess.Popen([RTOOL, "prm-score", *map(str, flags), "-o", str(out)], stdin=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env={**os.environ, "RTOOL_DEBUG": "0"})
    child.stdin.write(rows_text(rows[:20]).encode())
    child.stdin.flush()
    deadline = time.monotonic() + 240
    while not (out.exists() and out.read_text().count("\n") >= 16) and time.monotonic() < deadline:
        assert child.poll() is None, "prm-score ended before it was killed"
        time.sleep(0.2)
    time.sleep(1.0)  # nothing more comes: the other 4 rows wait for their window
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    kept = jsonl(out.read_text())
    assert [(row["id"], row["sample"]) for row in kept] == [(r["id"], r["sample"]) for r in rows[:16]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scored.jsonl", "traces.jsonl"]  # nothing hidden left
    refused = prm_score(*flags[1:], "-i", source, "-o", out)
    assert_clean_error(refused, f"{out}: already holds 16 scored rows", "--resume scores the rest")
    changed = prm_score(*flags[1:], "--agg", "mean", "-i", source, "-o", out, "--resume")
    assert_clean_error(changed, f"{out}:1: --resume with other scoring settings than the file's: agg 'min' -> 'mean'")
    # The same model named another way (a symlink, from another directory) is the same setting.
    link = tmp_path / "prm-link"
    link.symlink_to(prm_dirs["qwen-prm"])
    resumed = prm_score(link, *flags[2:], "-i", source, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert "16 rows were scored before (--resume)" in resumed.stderr.decode()
    assert "prm-score: 14 rows" in resumed.stderr.decode()
    whole = jsonl(prm_score(*flags[1:], "-i", source).stdout)
    final = jsonl(out.read_text())
    assert [(row["id"], row["sample"]) for row in final] == [(r["id"], r["sample"]) for r in rows]
    for row, expected in zip(final, whole):
        assert row["step_scores"] == pytest.approx(expected["step_scores"], abs=TOL)


@pytest.mark.parametrize("flags, message", [
    (["--resume"], "--resume needs --out FILE"),
    (["--resume", "--overwrite", "-o", "x.jsonl"], "--resume and --overwrite contradict each other"),
])
def test_resume_flags_that_cannot_work_are_refused(prm_dirs, flags, message):
    assert_clean_error(prm_score(prm_dirs["qwen-prm"], *flags, input=rows_text([GOOD])), message)


def test_an_out_file_with_rows_is_refused_before_the_model_loads(prm_dirs, tmp_path):
    old = tmp_path / "scored.jsonl"
    old.write_text(rows_text([{**GOOD, "step_scores": [0.5], "score": 0.5}]))
    result = prm_score(str(tmp_path / "no-such-model"), "-o", old, input=rows_text([GOOD]))
    assert_clean_error(result, f"{old}: already holds 1 scored rows", "--overwrite")
    result = prm_score(prm_dirs["qwen-prm"], "-o", old, "--overwrite", input=rows_text([{**GOOD, "id": "new"}]))
    assert result.returncode == 0, result.stderr.decode()
    assert [row["id"] for row in jsonl(old.read_text())] == ["new"]


def test_completions_without_steps_are_written_with_a_null_score_and_bon_skips_them(prm_dirs):
    # distill keeps every sample, empty ones too: prm-score | bon must run on the whole candidate set.
    rows = [{"id": "q", "sample": 0, "problem": QUESTION, "answer": "14", "completion": ""},
            {"id": "q", "sample": 1, "problem": QUESTION, "answer": "14", "completion": "\n\n \n\n"},
            {"id": "q", "sample": 2, "problem": QUESTION, "answer": "14", "completion": COMPLETIONS[1]},
            {"id": "q", "sample": 3, "problem": QUESTION, "answer": "14", "completion": COMPLETIONS[0]}]
    result = prm_score(prm_dirs["qwen-prm"], "--orm", prm_dirs["orm"], "--lam", "0.5", input=rows_text(rows))
    assert result.returncode == 0, result.stderr.decode()
    scored = jsonl(result.stdout)
    assert [(row["step_scores"], row["score"], row["orm_score"]) for row in scored[:2]] == [([], None, None)] * 2
    assert all(len(row["step_scores"]) == 3 and 0 < row["score"] < 1 for row in scored[2:])
    assert "2 rows had a completion without steps" in result.stderr.decode()
    for method in ("naive", "weighted", "majority"):
        chosen = run_rtool("bon", "--method", method, input=result.stdout)
        assert chosen.returncode == 0, chosen.stderr.decode()
        (best,) = jsonl(chosen.stdout)
        assert best["sample"] in (2, 3), method  # a candidate with an answer, never an empty one
        assert best["votes"] == 1 and best["weight"] == pytest.approx(scored[best["sample"]]["score"])


@pytest.mark.parametrize("model, extra, fragments", [
    ("causal-lm", [], ["fits no PRM convention", "no single 'ки' step-tag token", "a chat model is no reward"]),
    ("qwen-no-sep", [], ["has no '<extra_0>' token"]),
    ("qwen-prm", ["--lam", "1.5"], ["--lam must be in [0, 1], got 1.5"]),
    ("qwen-prm", ["--agg", "median"], ["unknown --agg 'median'", "valid: min, prod, last, mean"]),
    ("qwen-prm", ["--format", "prm"], ["unknown --format 'prm'"]),
    ("qwen-prm", ["--step-sep", ""], ["--step-sep must not be empty"]),
])
def test_bad_models_and_flags_are_one_line_errors(prm_dirs, model, extra, fragments):
    assert_clean_error(prm_score(prm_dirs[model], *extra, input=rows_text([GOOD])), *fragments)


def test_empty_input(prm_dirs):
    assert_clean_error(prm_score(prm_dirs["qwen-prm"], input=""), "<stdin>: no input rows")


def test_help_exits_0_without_importing_torch():
    code = ("import sys\nfrom rtool.cli import main\n"
            "try:\n    main(['prm-score', '--help'])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('TORCH', 'torch' in sys.modules, 'CODE', code, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "TORCH False CODE 0" in result.stderr, result.stderr[-2000:]
    assert "--step-sep" in result.stdout and "--lam" in result.stdout


def test_scores_are_probabilities(prm_dirs):
    for kind in ("qwen-prm", "math-shepherd", "orm", "orm2"):
        for scores in scorer(prm_dirs, kind).score([MESSAGES] * len(COMPLETIONS), COMPLETIONS):
            assert all(0.0 < s < 1.0 and not math.isnan(s) for s in scores)
