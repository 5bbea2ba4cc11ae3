"""distill: sample verified reasoning traces from a teacher. Reads prompt rows; writes one row per sample.

    rtool distill --teacher ckpt/teacher -n 4 --temperature 0.8 < prompts.jsonl > traces.jsonl
    rtool distill --teacher http://localhost:8000/v1 --api-model Qwen/QwQ-32B -n 8 -i gsm8k.jsonl -o traces.jsonl --resume
    rtool distill --teacher http://gpu1:8000/v1,http://gpu2:8000/v1 --batch-size 32 -n 8 -i gsm8k.jsonl -o traces.jsonl

Each output row is its input row plus `id`, `prompt_messages` (the conversation as sent, system prompt included),
`completion`, `sample`, `teacher` (--teacher-name, else the model as --teacher names it), `pred`, `correct` (true,
false, or null when the row has no gold answer), `finish_reason` (stop|length), `completion_tokens` (null when an
endpoint reports no usage) and `sampling` (backend, teacher, temperature, top_p, top_k, min_p, repetition_penalty,
max_new_tokens, seed, system: "" when none was sent, split and subset of the input, chat_template and prompt_template:
`sha256:HEX` of the --chat-template and --prompt-template files' text, "" for none); with several endpoints,
also `endpoint` (the URL that drew the sample). Negatives are kept:
`rtool sft` skips them by default and `rtool redi` learns from them. A summary goes to stderr.

`--prompt-template FILE`: a Jinja template over the row's fields renders the user's turn in place of the prompt
field, e.g. an instruction in the user turn (DeepSeek-R1's card) or LiteCoT's concise rewriting chosen by the row's
`difficulty` (rtool/generate/templates.py: sandboxed; a field a row lacks, or any error while a row renders, stops
the run with the row's and the template's file:line). `prompt_messages` records the rendering as sent, and
`question_messages` the question the completion answers (the input row's recorded `prompt_messages`, else its prompt
field): sft and the other training commands train on `question_messages` (`--prompt-field prompt_messages`: on the
rendering):

    rtool distill --teacher T --prompt-template concise.j2 < graded.jsonl > concise.jsonl

`--out FILE` refuses a file that already holds samples unless `--resume` (add the missing samples, with the same
`sampling` record: a different setting, split or template is an error, not a silent mix) or `--overwrite` (start the
file again).

`--max-new-tokens` (32768) is a cap, not a cost: batches hold `--batch-size` rows and each row stops at its end of
turn; a budget past the model's context is clamped to it with one warning (see README, distill).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rtool.errors import UserError
from rtool.options import DEFAULT_MAX_NEW_TOKENS
from rtool.options import (AllowPickleOpt, AnswerFieldOpt, ApiModelOpt, BackendOpt, BaseUrlOpt, BatchSizeOpt,
                           DeviceOpt, DtypeOpt, InputOpt, MaxNewTokensOpt, MinPOpt, NoSystemOpt, NumSamplesOpt, OutOpt,
                           PromptFieldOpt, RepetitionPenaltyOpt, RequestTimeoutOpt, SeedOpt, SkipBadOpt, SystemOpt,
                           TemperatureOpt, TopKOpt, TopPOpt, TrustRemoteCodeOpt)
from rtool.options import SplitOpt, SubsetOpt
from rtool.options import ChatTemplateOpt, GpuMemoryUtilizationOpt, MaxModelLenOpt, TensorParallelSizeOpt


def distill_cmd(
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="Teacher: a local HF dir, a hub id, a .gguf file, a PEFT adapter dir, a model name at --base-url, an http(s) endpoint URL, or several comma-separated endpoint URLs served together (requests round-robin, --batch-size in flight per endpoint; requests a failing endpoint drops go to the others).")],
    input: InputOpt = "-",
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: OutOpt = "-",
    num_samples: NumSamplesOpt = 4,
    temperature: TemperatureOpt = 0.8,
    top_p: TopPOpt = 0.95,
    top_k: TopKOpt = 0,
    min_p: MinPOpt = 0.0,
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    max_new_tokens: MaxNewTokensOpt = DEFAULT_MAX_NEW_TOKENS,
    system: SystemOpt = None,
    no_system: NoSystemOpt = False,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 16,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_model: ApiModelOpt = None,
    request_timeout: RequestTimeoutOpt = 600.0,
    teacher_name: Annotated[Optional[str], typer.Option("--teacher-name", help="What each row's `teacher` field says (default: the --teacher path, URL or API model name): a short label for eval --group-by teacher and difficulty's pass_rate_by, or one name for a teacher sampled from two places. `sampling` still records the model itself.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip (id, sample) pairs already in --out and append the rest (same sampling settings required).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start --out again when it already holds samples (default: refuse).")] = False,
    prompt_template: Annotated[Optional[Path], typer.Option("--prompt-template", help="A Jinja template file over the row's fields that renders the user's turn in place of the prompt field (sandboxed; a field a row lacks is an error). Rows record the rendering as prompt_messages and the question it answers as question_messages, which sft trains on.")] = None,
    prompt_field: PromptFieldOpt = None,
    answer_field: AnswerFieldOpt = None,
    skip_bad: SkipBadOpt = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
    chat_template: ChatTemplateOpt = None,
    tensor_parallel_size: TensorParallelSizeOpt = None,
    gpu_memory_utilization: GpuMemoryUtilizationOpt = None,
    max_model_len: MaxModelLenOpt = None,
) -> None:
    """Sample N completions per prompt from a teacher, grade each against the gold answer, keep them all."""
    from rtool.atomic import check_outputs_distinct
    from rtool.grade.fields import FieldMap
    from rtool.generate.core import SamplingParams
    from rtool.log import logger, stderr_console
    from rtool.io.records import ReadStats, RecordWriter, Written, first_rows, read_records, read_written
    from rtool.generate.traces import choose_system_prompt, warn_identical_samples

    params = SamplingParams(n=num_samples, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                            repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, seed=seed).check()
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other", hint="keep the samples, or start again")
    if resume and out == "-":
        raise UserError("--resume needs --out FILE", hint="the file whose finished samples are skipped")
    warn_identical_samples(params)
    check_outputs_distinct({"--out": out}, {"--input": input, "--teacher": teacher.split(","),
                                            "--prompt-template": prompt_template, "--chat-template": chat_template})
    system_prompt = choose_system_prompt(system, no_system)
    fields = FieldMap(prompt_field, answer_field)
    template = None
    if prompt_template is not None:
        from rtool.generate.templates import PromptTemplate

        template = PromptTemplate.load(prompt_template)  # a bad template is refused before the teacher loads
    # --overwrite never reads the old file: starting again must work whatever it holds.
    existing = read_written(Path(out), key=lambda row: (str(row["id"]), int(row["sample"])), settings_field="sampling",
                            command="distill", needs="id and sample") if out != "-" and not overwrite else Written()
    if existing.done and not (resume or overwrite):
        raise UserError(f"already holds {len(existing.done)} samples", path=out,
                        hint="--resume adds the missing ones, --overwrite starts again; appending would double them")
    done = existing.done if resume else set()
    if done:
        logger.info("resuming: %d samples already in %s", len(done), out)
    writer = RecordWriter(out, append=not overwrite)  # an unwritable --out is refused before the teacher loads

    from rtool.generate.backends import engine_settings, open_backend
    from rtool.generate.traces import as_recorded, sample_traces, sampling_record, warn_truncated
    from rtool.progress import Progress

    stats = ReadStats()
    rows = first_rows(read_records(input, split=split, subset=subset, skip_bad=skip_bad, stats=stats), input)
    engine = engine_settings(chat_template, tensor_parallel_size, gpu_memory_utilization, max_model_len)
    generator = open_backend(teacher, backend, base_url=base_url, api_model=api_model, batch_size=batch_size,
                             dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                             allow_pickle=allow_pickle, request_timeout=request_timeout, **engine)
    summary = _Summary()
    try:
        sampling = sampling_record(generator, params, system_prompt, split=split, subset=subset,
                                   chat_template=engine["chat_template"], prompt_template=template)
        if resume and existing.done:
            if existing.settings is None:
                logger.warning("%s has no `sampling` records (written by an older rtool): cannot check that "
                               "--resume uses the same settings", out)
            sampling = as_recorded(sampling, existing.settings, out)
            # A backend's name (hf vs vllm) counts as a setting: their numerics differ.
            existing.check_same_settings(sampling, out, what="sampling")
        with writer, Progress("distill", total=_samples_to_draw(input, params.n, done)) as progress:
            # A fleet has --batch-size requests in flight per endpoint: chunks as many times wider keep all busy.
            for trace in sample_traces(generator, rows, fields, params, system=system_prompt,
                                       chunk_prompts=batch_size * generator.servers, done=done,
                                       template=template):
                writer.write(trace.record(teacher=teacher_name or generator.name, sampling=sampling))
                summary.add(trace)
                progress.advance()
    finally:
        generator.close()
        if stats.skipped:
            logger.warning("skipped %d bad input lines (first: %s)", stats.skipped, stats.skipped_where[0])
    summary.show(stderr_console())
    warn_truncated(summary.truncated, summary.samples, max_new_tokens)


def _samples_to_draw(input: str, n: int, done: set) -> int | None:
    """Rows x samples, less those --resume skips (all counted as this input's); None when the input is stdin."""
    from rtool.progress import count_rows

    rows = count_rows(input)
    return None if rows is None else max(rows * n - len(done), 0)


class _Summary:
    def __init__(self) -> None:
        self.prompts: set = set()
        self.samples = 0
        self.correct = 0
        self.graded = 0
        self.tokens = 0
        self.counted = 0  # samples whose token count is known
        self.truncated = 0

    def add(self, trace) -> None:
        self.prompts.add(trace.prompt_id)
        self.samples += 1
        if trace.completion.completion_tokens is not None:
            self.tokens += trace.completion.completion_tokens
            self.counted += 1
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
            f"mean {f'{self.tokens / self.counted:.0f}' if self.counted else 'n/a'} tokens, "
            f"truncated {self.truncated / self.samples:.1%}"
        )
