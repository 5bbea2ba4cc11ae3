import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rtool.tiny import char_tokenizer, save_tiny, tiny_llama

TEXT = "What is 347 + 58?\n7+8+0=15, write 5 carry 1\nAnswer: \\boxed{405}."


def test_reload_round_trip(tmp_path):
    tokenizer = char_tokenizer([TEXT])
    model = tiny_llama(tokenizer, hidden_size=32, num_layers=2)
    save_tiny(model, tokenizer, tmp_path)
    tokenizer2 = AutoTokenizer.from_pretrained(tmp_path)
    model2 = AutoModelForCausalLM.from_pretrained(tmp_path)

    ids = tokenizer(TEXT)["input_ids"]
    assert tokenizer2(TEXT)["input_ids"] == ids
    assert tokenizer2.decode(ids) == TEXT
    assert tokenizer2.get_vocab() == tokenizer.get_vocab()
    assert (tokenizer2.pad_token, tokenizer2.eos_token) == ("<|pad|>", "<|im_end|>")
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(model(x).logits, model2(x).logits)
    assert model2.dtype == torch.float32
    assert model2.generation_config.eos_token_id == tokenizer.eos_token_id


def test_one_token_per_character_and_unknown_chars():
    tokenizer = char_tokenizer(["abc 0123456789\n"], extra_tokens=["\\boxed"])
    ids = tokenizer("10+2")["input_ids"]
    assert len(ids) == 4  # one token per digit; '+' was never seen, so it becomes <|unk|> rather than an error
    assert ids[2] == tokenizer.unk_token_id
    assert len(tokenizer("\\boxed")["input_ids"]) == 1
    assert tokenizer.decode(tokenizer("a b\nc")["input_ids"]) == "a b\nc"


def test_chat_template(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 1 + 2?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3


def test_generate_runs(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = ["What is 1 + 2?", "What is 10 - 3?"]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=8, do_sample=True, temperature=0.8)
    prompt_len = batch["input_ids"].shape[1]
    assert out.shape[0] == 2 and prompt_len < out.shape[1] <= prompt_len + 8


def test_task_rows(tiny_task_rows, tiny_task_file):
    assert len(tiny_task_rows) == 50
    assert len({row["problem"] for row in tiny_task_rows}) == 50
    for row in tiny_task_rows:
        assert row["solution"].endswith(f"\\boxed{{{row['answer']}}}.")
        a, op, b = row["problem"].removeprefix("What is ").removesuffix("?").split()
        assert int(row["answer"]) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    assert len(tiny_task_file.read_text().splitlines()) == 50


def test_make_task_splits_are_disjoint(make_task, tmp_path):
    import json

    train_path, test_path = make_task.write_splits(tmp_path, train=40, test=10, seed=3, ops=("add", "sub"))
    train = [json.loads(line) for line in train_path.read_text().splitlines()]
    test = [json.loads(line) for line in test_path.read_text().splitlines()]
    assert (len(train), len(test)) == (40, 10)
    assert not {row["problem"] for row in train} & {row["problem"] for row in test}
    assert make_task.add_solution(999, 1).splitlines() == [
        "9+1+0=10, write 0 carry 1", "9+0+1=10, write 0 carry 1", "9+0+1=10, write 10", "Answer: \\boxed{1000}."]
    assert make_task.sub_solution(105, 98).endswith("write 0 borrow 0\nAnswer: \\boxed{7}.")


def test_build_models(tiny_task_file, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples/quickstart/build_models.py"
    spec = importlib.util.spec_from_file_location("quickstart_build_models", path)
    build_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_models)
    teacher_dir, student_dir = build_models.build([tiny_task_file], tmp_path / "t", tmp_path / "s",
                                                  teacher_hidden=32, student_hidden=32)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    text = tiny_task_file.read_text() + build_models.DEFAULT_SYSTEM
    assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"]
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    student = AutoModelForCausalLM.from_pretrained(student_dir)
    assert not torch.equal(teacher.model.embed_tokens.weight, student.model.embed_tokens.weight)
