"""distill: sample verified reasoning traces from a teacher. Reads prompt rows; writes one row per sample.

    rtool distill --teacher ckpt/teacher -n 4 --temperature 0.8 < prompts.jsonl > traces.jsonl
    rtool distill --teacher http://localhost:8000/v1 --api-model Qwen/QwQ-32B -n 8 -i gsm8k.jsonl -o traces.jsonl --resume

Each output row is its input row plus `id`, `completion`, `sample`, `teacher`, `pred`, `correct` (true, false, or
null when the row has no gold answer), `finish_reason` (stop|length) and `completion_tokens`. Negatives are kept:
`rtool sft` skips them by default and `rtool redi` learns from them. A summary goes to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rtool.errors import UserError
from rtool.options import (AllowPickleOpt, AnswerFieldOpt, ApiModelOpt, BackendOpt, BaseUrlOpt, BatchSizeOpt,
                           DeviceOpt, DtypeOpt, InputOpt, MaxNewTokensOpt, NoSystemOpt, NumSamplesOpt, OutOpt,
                           PromptFieldOpt, RequestTimeoutOpt, SeedOpt, SkipBadOpt, SystemOpt, TemperatureOpt,
                           TopPOpt, TrustRemoteCodeOpt)


def distill_cmd(
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="Teacher: a local HF dir, a hub id, a .gguf file, a PEFT adapter dir, a model name at --base-url, or an http(s) endpoint URL.")],
    input: InputOpt = "-",
    out: OutOpt = "-",
    num_samples: NumSamplesOpt = 4,
    temperature: TemperatureOpt = 0.8,
    top_p: TopPOpt = 0.95,
    max_new_tokens: MaxNewTokensOpt = 1024,
    system: SystemOpt = None,
    no_system: NoSystemOpt = False,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 16,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_model: ApiModelOpt = None,
    request_timeout: RequestTimeoutOpt = 600.0,
    resume: Annotated[bool, typer.Option("--resume", help="Skip (id, sample) pairs already in --out and append the rest.")] = False,
    prompt_field: PromptFieldOpt = None,
    answer_field: AnswerFieldOpt = None,
    skip_bad: SkipBadOpt = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
) -> None:
    """Sample N completions per prompt from a teacher, grade each against the gold answer, keep them all."""
    from rtool.fields import FieldMap
    from rtool.log import logger, stderr_console
    from rtool.records import ReadStats, RecordWriter, first_rows, read_records
    from rtool.traces import check_sampling, choose_system_prompt

    check_sampling(num_samples, temperature, top_p, max_new_tokens, batch_size)
    if resume and out == "-":
        raise UserError("--resume needs --out FILE", hint="the file whose finished samples are skipped")
    system_prompt = choose_system_prompt(system, no_system)
    fields = FieldMap(prompt_field, answer_field)
    done = _finished_samples(Path(out)) if resume else set()
    if done:
        logger.info("resuming: %d samples already in %s", len(done), out)

    from rtool.generation import SamplingParams, open_backend
    from rtool.traces import sample_traces

    stats = ReadStats()
    rows = first_rows(read_records(input, skip_bad=skip_bad, stats=stats), input)
    generator = open_backend(teacher, backend, base_url=base_url, api_model=api_model, batch_size=batch_size,
                             dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                             allow_pickle=allow_pickle, request_timeout=request_timeout)
    params = SamplingParams(n=num_samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                            seed=seed)
    summary = _Summary()
    try:
        with RecordWriter(out) as writer:
            for trace in sample_traces(generator, rows, fields, params, system=system_prompt,
                                       chunk_prompts=batch_size, done=done):
                writer.write(trace.record(teacher=generator.name))
                summary.add(trace)
    finally:
        generator.close()
        if stats.skipped:
            logger.warning("skipped %d bad input lines (first: %s)", stats.skipped, stats.skipped_where[0])
    summary.show(stderr_console())


def _finished_samples(out_path: Path) -> set:
    """(id, sample) pairs already written. A last line without its newline (a kill -9 mid-write) is not a
    finished sample: the writer cuts it off before appending."""
    import json

    done: set = set()
    if not out_path.exists():
        return done
    with open(out_path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n") or not line.strip():
                continue
            try:
                row = json.loads(line)
                done.add((str(row["id"]), int(row["sample"])))
            except (ValueError, KeyError, TypeError):
                raise UserError("not an rtool distill output line (needs id and sample)", path=out_path,
                                line=number, hint="--resume appends to a file written by rtool distill") from None
    return done


class _Summary:
    def __init__(self) -> None:
        self.prompts: set = set()
        self.samples = 0
        self.correct = 0
        self.graded = 0
        self.tokens = 0
        self.truncated = 0

    def add(self, trace) -> None:
        self.prompts.add(trace.prompt_id)
        self.samples += 1
        self.tokens += trace.completion.completion_tokens
        self.truncated += trace.completion.finish_reason == "length"
        if trace.correct is not None:
            self.graded += 1
            self.correct += bool(trace.correct)

    def show(self, console) -> None:
        if not self.samples:
            console.print("distill: no new samples written")
            return
        pass_rate = f"{self.correct / self.graded:.1%}" if self.graded else "n/a (no gold answers)"
        console.print(
            f"distill: {len(self.prompts)} prompts, {self.samples} samples, pass rate {pass_rate}, "
            f"mean {self.tokens / self.samples:.0f} tokens, truncated {self.truncated / self.samples:.1%}"
        )
