"""Session fixtures shared by every test: a tiny saved Llama and a small arithmetic task.

`tiny_model_dir` is a randomly initialised 2-layer Llama (hidden 32) with a character-level tokenizer and a
ChatML template, saved with `save_pretrained`; load it with AutoTokenizer / AutoModelForCausalLM.
`tiny_task_rows` are 50 rows `{"id", "problem", "solution", "answer"}` from examples/quickstart/make_task.py,
and `tiny_task_file` is the same rows as JSONL.
"""

import importlib.util
import json
import os
import string
from pathlib import Path

import pytest

# Tiny models run fastest on one thread, and a second torch thread spinning on a busy machine makes every step
# many times slower. Set before torch is imported, so it holds in this process and in every `rtool` subprocess.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent


def _load_example(relpath: str, name: str):
    # Tests run with --import-mode=importlib, so examples/ is not on sys.path: load the file directly.
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session", autouse=True)
def rtool_cache_dir(tmp_path_factory):
    """Converted GGUF copies go to a session temp dir, shared by this process and its `rtool` subprocesses (so
    the slow SmolLM2 tests convert the file once), never to the user's ~/.cache."""
    path = tmp_path_factory.mktemp("rtool-cache")
    os.environ["RTOOL_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def make_task():
    """The examples/quickstart/make_task.py module."""
    return _load_example("examples/quickstart/make_task.py", "quickstart_make_task")


@pytest.fixture(scope="session")
def tiny_task_rows(make_task):
    return make_task.make_rows(50, seed=0, ops=("add", "sub"))


@pytest.fixture(scope="session")
def tiny_task_file(tiny_task_rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "task.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in tiny_task_rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_task_rows, tmp_path_factory):
    from rtool.tiny import char_tokenizer, save_tiny, tiny_llama

    # Letters, digits and punctuation cover English prompts, answers and \boxed{}; the task rows add nothing new
    # but keep the sample honest if the task format changes.
    sample = [string.ascii_letters + string.digits + string.punctuation + " \n"]
    sample += [row["problem"] + row["solution"] for row in tiny_task_rows]
    tokenizer = char_tokenizer(sample)
    model = tiny_llama(tokenizer, hidden_size=32, num_layers=2, num_heads=4, seed=0)
    return save_tiny(model, tokenizer, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def one_torch_thread():
    """In-process training and scoring on one torch thread (as OMP_NUM_THREADS=1 gives the subprocesses); a module
    opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
