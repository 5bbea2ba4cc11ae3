"""`--teacher URL1,URL2,...`: several real local endpoints (tests/openai_server.py, the tiny model) served as one
teacher: requests spread over them with a bound per endpoint, a failing endpoint's requests drawn elsewhere with the
same seeds (so the rows are those of a healthy run), a clean error when all are down, and --resume across a break."""

import json
import socket
import time
from contextlib import ExitStack

import pytest

from helpers import jsonl, last_error_line, run_rtool
from openai_server import serve
from rtool.generate.backends import open_backend
from rtool.generate.backends.fleet import parse_fleet
from rtool.errors import UserError
from rtool.generate.core import SamplingParams

CONVERSATIONS = [[{"role": "user", "content": f"What is {i} + 2?"}] for i in range(12)]
SAMPLING = SamplingParams(n=1, temperature=1.0, max_new_tokens=6)
DISTILL = ["distill", "-n", 2, "--max-new-tokens", 6, "--temperature", 1.0, "--batch-size", 1]
FAILING = {"fail_first": 10**6, "fail_status": 503, "retry_after": 0}  # every request: 503 at once


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    return open_backend(tiny_model_dir, "hf", batch_size=4)


@pytest.fixture
def servers(hf):
    """servers(option dicts...) -> started servers of the tiny model (one model lock), stopped after the test."""
    with ExitStack() as stack:
        lock = None

        def start(*options):
            nonlocal lock
            started = [stack.enter_context(serve(hf, model_lock=lock, **opts)) for opts in options]
            lock = lock or started[0].model_lock
            return started

        yield start


def dead_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def rows_text(rows):
    return "".join(json.dumps(row) + "\n" for row in rows)


def without_endpoint(rows):
    return [{k: v for k, v in row.items() if k != "endpoint"} for row in rows]


def test_parse_fleet():
    assert parse_fleet("http://a:8000, https://b/v1/") == ["http://a:8000/v1", "https://b/v1"]
    assert parse_fleet("http://a:8000/v1") is None  # one endpoint: not a fleet
    assert parse_fleet("ckpt/teacher,v2") is None  # a model path may hold a comma
    for spec, message in [("http://a,,http://b", "empty item 2"), ("http://a,", "empty item 2"),
                          ("http://a,my-model", "'my-model' in the endpoint list"),
                          ("http://a:8000,http://a:8000/v1", "listed twice")]:
        with pytest.raises(UserError, match=message):
            parse_fleet(spec)
    with pytest.raises(UserError, match="2 endpoint URLs given; the hf backend needs a local model"):
        open_backend("http://a,http://b", "hf")


def test_requests_spread_with_in_flight_bounded_per_endpoint(servers, hf):
    endpoints = servers({"delay": 0.05}, {"delay": 0.05}, {"delay": 0.05})
    fleet = open_backend(",".join(s.url for s in endpoints), batch_size=2)
    results = fleet.generate(CONVERSATIONS, SAMPLING)
    fleet.close()
    counts = [len(s.chat_requests()) for s in endpoints]
    assert sum(counts) == 12 and min(counts) >= 2, counts  # round-robin: each endpoint its share
    # --batch-size is per endpoint: each held 2 at once (6 in flight in all), none more.
    assert [s.max_in_flight for s in endpoints] == [2, 2, 2]
    assert fleet.name == hf.name and {r[0].endpoint for r in results} == {s.url for s in endpoints}
    single = open_backend(endpoints[0].url, batch_size=2)
    assert [r[0].text for r in results] == [r[0].text for r in single.generate(CONVERSATIONS, SAMPLING)]
    single.close()


def test_each_endpoint_is_asked_for_its_own_model_name(servers, hf):
    class Renamed:  # the same model served under another name
        name = "tiny-b"
        generate = staticmethod(hf.generate)

    a = servers({})[0]
    with serve(Renamed(), model_lock=a.model_lock) as b:
        fleet = open_backend(f"{a.url},{b.url}", batch_size=1)
        fleet.generate(CONVERSATIONS[:4], SAMPLING)
        fleet.close()
        named = open_backend("tiny-b", base_url=f"{b.url},{b.url.replace('127.0.0.1', 'localhost')}")
        named.close()
    assert fleet.name == f"{hf.name},tiny-b"  # differing names: all recorded
    assert {body["model"] for *_, body in a.chat_requests()} == {hf.name}
    assert {body["model"] for *_, body in b.chat_requests()} == {"tiny-b"}
    assert named.name == "tiny-b"  # --base-url URL1,URL2 --teacher NAME


@pytest.mark.parametrize("failure", ["503", "refused"])
def test_a_failing_endpoint_changes_no_row(servers, tiny_task_rows, failure):
    rows = rows_text(tiny_task_rows[:4])
    healthy, broken = servers({}, FAILING) if failure == "503" else (servers({})[0], None)
    bad_url = broken.url if broken else dead_url()
    reference = run_rtool(*DISTILL, "--teacher", healthy.url, input=rows)
    assert reference.returncode == 0, reference.stderr.decode()
    start = time.monotonic()
    result = run_rtool(*DISTILL, "--teacher", f"{bad_url},{healthy.url}", "--api-model", healthy.backend.name,
                       input=rows)
    assert result.returncode == 0, result.stderr.decode()
    assert time.monotonic() - start < 30
    out = jsonl(result.stdout)
    assert without_endpoint(out) == jsonl(reference.stdout)  # same samples, same order, same `teacher`
    assert {row["endpoint"] for row in out} == {healthy.url}
    stderr = " ".join(result.stderr.decode().split())
    assert stderr.count("out of rotation") == 1 and f"{bad_url} is failing" in stderr
    if broken:  # the requests it failed were drawn elsewhere with their own seeds
        healthy_seeds = [body["seed"] for *_, body in healthy.chat_requests()]
        assert {body["seed"] for *_, body in broken.chat_requests()} <= set(healthy_seeds[len(out):])


def test_all_endpoints_down_is_one_line_error(servers, tiny_task_rows):
    rows = rows_text(tiny_task_rows[:2])
    start = time.monotonic()
    result = run_rtool(*DISTILL, "--teacher", f"{dead_url()},{dead_url()}", input=rows)
    assert result.returncode == 2 and time.monotonic() - start < 30
    line = last_error_line(result)
    assert line.startswith("rtool: error: all 2 endpoints are down (http://127.0.0.1:") and "cannot connect" in line
    assert result.stdout == b"" and result.stderr.decode().count("rtool: error:") == 1
    # Up at the start (model names asked), failing every request later: the same error.
    broken = servers(FAILING, FAILING)
    result = run_rtool(*DISTILL, "--teacher", ",".join(s.url for s in broken), input=rows)
    assert result.returncode == 2 and "all 2 endpoints are down" in last_error_line(result)
    assert "HTTP 503 injected failure" in last_error_line(result)


def test_resume_after_the_fleet_broke_mid_run(servers, tiny_task_rows, tmp_path):
    rows = rows_text(tiny_task_rows[:6])
    whole = tmp_path / "whole.jsonl"
    good = servers({}, {})
    fleet = ",".join(s.url for s in good)
    assert run_rtool(*DISTILL, "--teacher", fleet, "-o", whole, input=rows).returncode == 0
    cut = tmp_path / "cut.jsonl"
    # Each server answers 3 requests, then fails all: the first chunk (2 prompts x 2 samples) is written.
    breaking = servers({"fail_after": 3, **FAILING, "fail_first": 0}, {"fail_after": 3, **FAILING, "fail_first": 0})
    broke = run_rtool(*DISTILL, "--teacher", ",".join(s.url for s in breaking), "-o", cut, input=rows)
    assert broke.returncode == 2 and "all 2 endpoints are down" in last_error_line(broke)
    assert 0 < len(jsonl(cut.read_text())) < 12
    resumed = run_rtool(*DISTILL, "--teacher", fleet, "-o", cut, "--resume", input=rows)
    assert resumed.returncode == 0, resumed.stderr.decode()
    expected, got = jsonl(whole.read_text()), jsonl(cut.read_text())
    keys = [(r["id"], r["sample"]) for r in got]
    assert len(keys) == len(set(keys)) == 12  # nothing lost, nothing doubled
    completions = {(r["id"], r["sample"]): r["completion"] for r in got}
    assert completions == {(r["id"], r["sample"]): r["completion"] for r in expected}


def test_bad_endpoint_list_is_one_line_error(tiny_task_rows):
    result = run_rtool(*DISTILL, "--teacher", "http://127.0.0.1:9/v1,Qwen/QwQ-32B", input=rows_text(tiny_task_rows[:1]))
    assert result.returncode == 2 and result.stdout == b""
    assert last_error_line(result) == ("rtool: error: 'Qwen/QwQ-32B' in the endpoint list 'http://127.0.0.1:9/v1,"
                                       "Qwen/QwQ-32B' is not an http(s) URL (list only endpoint URLs; the model name "
                                       "goes in --api-model)")
