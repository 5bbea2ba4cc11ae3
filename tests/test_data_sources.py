"""Data from anywhere `datasets` reads: hub-layout folders, saved DatasetDicts with --split, hub ids (offline, from the
local cache) and the benchmarks rtool ships, by name."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import RTOOL, last_error_line, run_rtool
from rtool.errors import UserError
from rtool.io.records import read_records


def graded(split, n):
    """Rows eval grades without a model: `n` prompts of `split`, the first answered right, the others wrong."""
    return [{"id": f"{split}-{i}", "problem": f"{split} {i}: 1+1?", "answer": "2",
             "completion": "\\boxed{2}" if i == 0 else "\\boxed{3}"} for i in range(n)]


def write_hub_layout(folder: Path, splits: dict) -> Path:
    """DIR/data/SPLIT-00000-of-00001.parquet, as the hub stores a dataset and `trl sft --dataset_name DIR` reads it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True)
    for split, rows in splits.items():
        pq.write_table(pa.Table.from_pylist(rows), folder / "data" / f"{split}-00000-of-00001.parquet")
    return folder


def test_a_hub_layout_folder_reads_the_split_asked_for_and_rows_say_where_they_came_from(tmp_path):
    folder = write_hub_layout(tmp_path / "gsm", {"train": graded("train", 3), "test": graded("test", 2)})
    rows = list(read_records(folder, split="test"))
    assert [row["id"] for row in rows] == ["test-0", "test-1"]
    assert (rows[1].path, rows[1].line) == (f"{folder}[test]", 2)
    assert rows[1].error("missing field 'x'").render() == f"{folder}[test]:2: missing field 'x'"
    with pytest.raises(UserError, match=r"gsm: holds several splits: (train, test|test, train) \(pick one with --split"):
        list(read_records(folder))
    with pytest.raises(UserError, match=r"no split 'dev' \(its splits: "):
        list(read_records(folder, split="dev"))


def test_a_folder_of_jsonl_and_csv_files_and_a_single_split_needs_no_flag(tmp_path):
    jsonl_dir, csv_dir = tmp_path / "j", tmp_path / "c"
    jsonl_dir.mkdir(), csv_dir.mkdir()
    (jsonl_dir / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in graded("test", 2)))
    (csv_dir / "train.csv").write_text("problem,answer\n1+1?,2\n2+2?,4\n")
    assert [row["id"] for row in read_records(jsonl_dir)] == ["test-0", "test-1"]  # the only split
    assert list(read_records(csv_dir, split="train")) == [{"problem": "1+1?", "answer": 2},
                                                          {"problem": "2+2?", "answer": 4}]


def test_a_folder_with_subsets_needs_subset_and_reads_the_one_asked_for(tmp_path):
    folder = tmp_path / "multi"
    for subset in ("main", "socratic"):
        (folder / subset).mkdir(parents=True)
        (folder / subset / "test.jsonl").write_text(json.dumps({"id": subset}) + "\n")
    # The card's YAML, as the hub declares configs (openai/gsm8k: main, socratic).
    (folder / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {name}\n  data_files:\n  - split: test\n    path: {name}/test.jsonl\n"
        for name in ("main", "socratic")) + "---\n")
    with pytest.raises(UserError, match=r"multi: holds several subsets \(configs\): main, socratic \(pick one with "
                                        r"--subset, e.g. --subset main\)"):
        list(read_records(folder))
    assert [row["id"] for row in read_records(folder, subset="socratic")] == ["socratic"]


def test_a_plain_file_refuses_split_and_subset_rather_than_ignoring_them(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"q": 1}) + "\n")
    with pytest.raises(UserError, match="rows.jsonl: --split given, but this is one file"):
        list(read_records(path, split="test"))
    with pytest.raises(UserError, match="--subset given"):
        list(read_records(path, subset="main"))


def test_a_saved_dataset_dict_needs_split_and_eval_counts_the_test_rows(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "saved"
    DatasetDict({"train": Dataset.from_list(graded("train", 30)),
                 "test": Dataset.from_list(graded("test", 10))}).save_to_disk(str(folder))
    refused = run_rtool("eval", "-i", folder)
    assert refused.returncode == 2 and refused.stdout == b""
    assert last_error_line(refused) == (f"rtool: error: {folder}: holds several splits: train, test "
                                        "(pick one with --split, e.g. --split test)")
    result = run_rtool("eval", "-i", folder, "--split", "test")
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["prompts"] == 10 and summary["pass@1"] == pytest.approx(0.1)


def hub_env(tmp_path) -> dict:
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def no_hub_env(tmp_path) -> dict:
    """No offline switch, and a Hub that refuses connections (port 9 of this machine): as on a machine without
    network whose user never set HF_HUB_OFFLINE."""
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    return {**{key: value for key, value in os.environ.items() if "OFFLINE" not in key and "PROXY" not in key.upper()},
            **env}


def test_a_hub_id_that_is_not_cached_offline_is_one_line_naming_it(tmp_path):
    result = run_rtool("eval", "--input", "someorg/not-cached", "--split", "test", env=hub_env(tmp_path))
    assert result.returncode == 2 and result.stdout == b""
    lines = result.stderr.decode().strip().splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith(
        "rtool: error: someorg/not-cached: no such local file or folder, and not in the local hub cache; offline "
        "(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)"), result.stderr.decode()


def cache_tinymath(tmp_path) -> None:
    # The layout `load_dataset("someorg/tinymath", "main")` leaves in HF_HOME/datasets: built by datasets' own json
    # builder, then placed where the cache lookup finds a hub dataset (NAMESPACE___NAME/CONFIG/VERSION/HASH).
    from datasets.packaged_modules.json.json import Json

    for split, n in (("train", 3), ("test", 4)):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in graded(split, n)))
    builder = Json(data_files={s: str(tmp_path / f"{s}.jsonl") for s in ("train", "test")}, dataset_name="tinymath",
                   config_name="main", cache_dir=str(tmp_path / "build"))
    builder.download_and_prepare()
    shutil.copytree(builder.cache_dir, tmp_path / "hf" / "datasets" / "someorg___tinymath" / "main" / "0.0.0" / "0")


def test_a_hub_id_reads_from_the_local_cache_offline(tmp_path):
    cache_tinymath(tmp_path)
    result = run_rtool("eval", "-i", "someorg/tinymath", "--subset", "main", "--split", "test", env=hub_env(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["prompts"] == 4


def test_without_network_a_cached_hub_id_reads_and_another_fails_in_one_line(tmp_path):
    """No HF_HUB_OFFLINE, no network: rtool finds out in one short connection and reads offline, so the cached
    dataset reads, and one that is not cached fails at once, in one line naming why (not after the Hub client's
    retries, whose log lines came before rtool's error)."""
    cache_tinymath(tmp_path)
    result = run_rtool("eval", "-i", "someorg/tinymath", "--subset", "main", "--split", "test",
                       env=no_hub_env(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["prompts"] == 4
    result = run_rtool("eval", "-i", "someorg/not-cached", "--split", "test", env=no_hub_env(tmp_path))
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2 and lines == [lines[-1]], lines
    assert lines[-1].startswith("rtool: error: someorg/not-cached: no such local file or folder, not in the local hub "
                                "cache, and the Hub could not be reached (127.0.0.1:9: ")


@pytest.mark.parametrize("name", ["MATH500", "math-500", "Math_500", "GSM-8K"])
def test_a_shipped_benchmark_is_found_whatever_its_case_and_dashes(name):
    rows = list(read_records(name))
    shipped = "gsm8k" if "8" in name else "math500"
    assert len(rows) == {"gsm8k": 1319, "math500": 500}[shipped] and rows[0].path == shipped


@pytest.mark.parametrize("name, hint", [("math50", "did you mean math500? rtool ships: gsm8k, math500"),
                                        ("aime", "rtool ships: gsm8k, math500")])
def test_a_name_that_is_no_benchmark_names_the_shipped_ones_and_fails_fast_without_network(tmp_path, name, hint):
    result = run_rtool("eval", "-i", name, env=no_hub_env(tmp_path))
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2 and lines == [lines[-1]], lines
    assert f"rtool: error: {name}: no such local file or folder" in lines[-1] and f"({hint}; " in lines[-1]


def test_a_gzipped_jsonl_file_a_byte_order_mark_and_jsonl_splits_in_a_hub_layout_folder(tmp_path):
    import gzip

    rows = graded("test", 2)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    (tmp_path / "rows.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Notepad and PowerShell write it
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfproblem,answer\n1+1?,2\n")
    for name in ("rows.jsonl.gz", "bom.jsonl", "bom.json"):
        assert list(read_records(tmp_path / name)) == rows, name
    assert list(read_records(tmp_path / "bom.csv")) == [{"problem": "1+1?", "answer": 2}]
    result = run_rtool("eval", input=b"\xef\xbb\xbf" + text.encode())  # stdin too
    assert result.returncode == 0 and json.loads(result.stdout)["prompts"] == 2, result.stderr.decode()
    (tmp_path / "broken.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(UserError, match=r"broken.jsonl.gz: cannot decompress it \(.gz\)"):
        list(read_records(tmp_path / "broken.jsonl.gz"))

    folder = tmp_path / "hub"
    (folder / "data").mkdir(parents=True)
    for split in ("train", "test"):
        (folder / "data" / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in graded(split, 2)))
    with pytest.raises(UserError, match=r"hub: holds several splits: (train, test|test, train) \(pick one with "):
        list(read_records(folder))
    assert [row["id"] for row in read_records(folder, split="test")] == ["test-0", "test-1"]


def test_shipped_benchmarks_are_found_by_name_outside_the_checkout_and_a_local_path_wins(tmp_path):
    count = "from rtool.io.records import read_records as r; print(sum(1 for _ in r('math500')), " \
            "sum(1 for _ in r('gsm8k', split='test')))"
    env = {**os.environ, "PYTHONPATH": ""}
    shipped = subprocess.run([sys.executable, "-c", count], cwd=tmp_path, capture_output=True, env=env, text=True)
    assert shipped.stdout.split() == ["500", "1319"], shipped.stderr
    (tmp_path / "math500").write_text(json.dumps({"problem": "mine", "answer": "1"}) + "\n")
    local = subprocess.run([sys.executable, "-c", count], cwd=tmp_path, capture_output=True, env=env, text=True)
    assert local.stdout.split() == ["1", "1319"], local.stderr
    bad_split = subprocess.run([RTOOL, "eval", "-i", "gsm8k", "--split", "train"], cwd=tmp_path, capture_output=True,
                               env=env, text=True)
    assert bad_split.returncode == 2
    assert bad_split.stderr.strip().endswith("gsm8k: no split 'train' (rtool ships its test split only)")
    (tmp_path / "runs").mkdir()  # runs/sft mistyped: a missing path, not a hub dataset to look for
    missing = subprocess.run([RTOOL, "eval", "-i", "runs/sft"], cwd=tmp_path, capture_output=True, env=env, text=True)
    assert missing.returncode == 2 and missing.stderr.strip().endswith("runs/sft: no such file or directory")


def test_training_reads_the_split_asked_for_from_a_hub_layout_folder(tmp_path, capfd, tiny_model_dir, tiny_task_rows,
                                                                      one_torch_thread):
    from helpers import run_in_process

    folder = write_hub_layout(tmp_path / "traces", {"train": tiny_task_rows[:8], "test": tiny_task_rows[8:10]})
    fast = ["--model", tiny_model_dir, "--max-steps", "1", "--batch-size", "2", "--max-length", "256",
            "--save-steps", "0", "--logging-steps", "1"]
    code, stdout, stderr = run_in_process(capfd, "sft", "--data", folder, "--out", tmp_path / "refused", *fast)
    assert code == 2 and stdout == ""
    assert "traces: holds several splits: train, test (pick one with --split" in " ".join(stderr.split())
    code, stdout, stderr = run_in_process(capfd, "sft", "--data", folder, "--split", "train", "--out", tmp_path / "sft",
                                          *fast)
    assert code == 0, stderr
    assert stdout.strip() == str(tmp_path / "sft")
    assert json.loads((tmp_path / "sft" / "run_settings.json").read_text())["split"] == "train"  # a resume keeps it
