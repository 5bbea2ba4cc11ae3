"""prm-label: Math-Shepherd step labels without annotators. Reads graded trace rows (distill's output); writes each
row plus `steps`, `step_labels`, `step_values`, `step_rollouts`, `step_truncated` and `prm_labeling`.

    rtool distill --teacher S -n 4 < train.jsonl | rtool prm-label --policy S -k 8 > steps.jsonl
    rtool prm-label --policy http://localhost:8000/v1 -k 8 -i traces.jsonl -o steps.jsonl --resume

A trace's steps are its completion split on --step-sep, as prm-score splits them. For step i, k rollouts from
--policy continue the assistant turn holding steps 1..i (in the conversation the trace answered: its
`prompt_messages`, else its prompt field with the system prompt distill sends by default), and each is graded
against the row's gold answer (options for multiple choice). `step_labels[i]` is 1 if any rollout is correct, else 0
(Math-Shepherd's hard estimation); `step_values[i]` the share of correct rollouts (soft estimation);
`step_rollouts[i]` how many rollouts that took. The last step needs none: its label and value are the trace's own
correctness. After a step labelled 0 the later steps are 0 without rollouts (--label-all rolls out every step).
A rollout cut by --max-new-tokens (finish_reason length) decides no label: the step's label and value come from its
other rollouts, `step_truncated[i]` counts the cut ones, and a step whose every rollout was cut is labelled null
(unknown; prm-train does not train on it). The share cut goes to stderr; --count-truncated grades them as they are.
Rollouts of many traces and steps go to the policy in one batch (see rtool/prm/label.py for the seeds).

`--out FILE` refuses a file that already holds rows unless `--resume` (label only the traces not in it, with the same
settings; a trace is keyed by its id, or for a row without one by its prompt, as distill keys it, and its sample)
or `--overwrite` (which never reads the old file); the file is made at the first labelled row. Rows without a gold
answer are an error, or with --skip-ungraded dropped and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rtool.errors import UserError
from rtool.options import DEFAULT_MAX_NEW_TOKENS
from rtool.options import (AllowPickleOpt, AnswerFieldOpt, ApiModelOpt, BackendOpt, BaseUrlOpt, BatchSizeOpt,
                           DeviceOpt, DtypeOpt, InputOpt, MaxNewTokensOpt, MinPOpt, NoSystemOpt, OutOpt,
                           PromptFieldOpt, RepetitionPenaltyOpt, RequestTimeoutOpt, SeedOpt, SkipBadOpt, StepSepOpt,
                           SystemOpt, TemperatureOpt, TopKOpt, TopPOpt, TrustRemoteCodeOpt)
from rtool.options import SplitOpt, SubsetOpt
from rtool.options import ChatTemplateOpt, GpuMemoryUtilizationOpt, MaxModelLenOpt, TensorParallelSizeOpt


def prm_label_cmd(
    policy: Annotated[str, typer.Option("--policy", help="Policy that rolls out each step prefix: a local HF dir, a hub id, a .gguf file, a PEFT adapter dir, a model name at --base-url, an http(s) endpoint URL (it must accept continue_final_message: vLLM, SGLang), or several comma-separated endpoint URLs.")],
    input: InputOpt = "-",
    split: SplitOpt = None,
    subset: SubsetOpt = None,
    out: OutOpt = "-",
    k: Annotated[int, typer.Option("--rollouts", "-k", help="Rollouts per step prefix. The last step gets none: its label is the trace's own correctness (the completion is already whole).")] = 8,
    step_sep: StepSepOpt = "\\n\\n",
    label_all: Annotated[bool, typer.Option("--label-all", help="Roll out every step. Default: once a step is labelled 0 (no rollout correct), the later steps, the last one too, are 0 without rollouts.")] = False,
    count_truncated: Annotated[bool, typer.Option("--count-truncated", help="Grade rollouts cut by --max-new-tokens as they are (Math-Shepherd's rule: a cut rollout mostly counts as wrong). Default: they decide no label; a step whose every rollout was cut is labelled null.")] = False,
    skip_ungraded: Annotated[bool, typer.Option("--skip-ungraded", help="Drop rows without a gold answer (counted on stderr) instead of stopping with an error.")] = False,
    temperature: TemperatureOpt = 0.8,
    top_p: TopPOpt = 0.95,
    top_k: TopKOpt = 0,
    min_p: MinPOpt = 0.0,
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    max_new_tokens: MaxNewTokensOpt = DEFAULT_MAX_NEW_TOKENS,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 16,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_model: ApiModelOpt = None,
    request_timeout: RequestTimeoutOpt = 600.0,
    resume: Annotated[bool, typer.Option("--resume", help="Skip traces (id, sample) already in --out and append the rest (same settings required).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start --out again when it already holds rows (default: refuse).")] = False,
    system: SystemOpt = None,
    no_system: NoSystemOpt = False,
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
    """Label every step of each trace by rolling the policy out from it (Math-Shepherd); write step_labels/values."""
    from rtool.atomic import check_outputs_distinct
    from rtool.grade.fields import FieldMap
    from rtool.generate.core import SamplingParams
    from rtool.log import logger
    from rtool.prm.score import parse_step_sep
    from rtool.prm.label import read_existing
    from rtool.io.records import ReadStats, RecordWriter, first_rows, read_records
    from rtool.generate.traces import choose_system_prompt

    if k < 1:
        raise UserError(f"-k must be at least 1, got {k}", hint="the rollouts per step prefix")
    params = SamplingParams(n=k, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                            repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, seed=seed).check()
    sep = parse_step_sep(step_sep)
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other", hint="keep the rows, or start again")
    if resume and out == "-":
        raise UserError("--resume needs --out FILE", hint="the file whose labelled traces are skipped")
    if k > 1 and params.greedy:
        logger.warning("-k %d at --temperature 0: every rollout of a step is the same greedy one, so step_values "
                       "are 0 or 1; sample with --temperature > 0", k)
    check_outputs_distinct({"--out": out}, {"--input": input, "--policy": policy.split(","),
                                            "--chat-template": chat_template})
    system_prompt = choose_system_prompt(system, no_system)
    fields = FieldMap(prompt_field, answer_field)
    # --overwrite never reads the old file: starting again must work whatever it holds.
    existing = read_existing(Path(out), fields) if out != "-" and not overwrite else None
    if existing is not None and existing.done and not (resume or overwrite):
        raise UserError(f"already holds {len(existing.done)} labelled traces", path=out,
                        hint="--resume adds the missing ones, --overwrite starts again; appending would double them")
    done = existing.done if resume else set()
    if done:
        logger.info("resuming: %d traces already in %s", len(done), out)
    writer = RecordWriter(out, append=not overwrite)  # an unwritable --out is refused before the policy loads

    from rtool.generate.backends import engine_settings, open_backend
    from rtool.prm.label import labeling_record
    from rtool.progress import Progress, count_rows

    stats = ReadStats()
    rows = first_rows(read_records(input, split=split, subset=subset, skip_bad=skip_bad, stats=stats), input)
    generator = open_backend(policy, backend, base_url=base_url, api_model=api_model, batch_size=batch_size,
                             dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                             allow_pickle=allow_pickle, request_timeout=request_timeout,
                             **engine_settings(chat_template, tensor_parallel_size, gpu_memory_utilization,
                                               max_model_len))
    run = _Run(fields, system_prompt, sep, label_all, skip_ungraded, done, count_truncated,
               system_explicit=system is not None or no_system)
    try:
        settings = labeling_record(generator, params, sep, label_all, system_prompt, count_truncated)
        if resume:
            existing.check_same_settings(settings, out, what="labeling")
        traces = count_rows(input)
        with writer, Progress("prm-label", total=None if traces is None else max(traces - len(done), 0)) as progress:
            # A fleet has --batch-size requests in flight per endpoint: chunks as many times wider keep all busy.
            run.label(generator, rows, params, settings, writer, chunk=batch_size * generator.servers,
                      progress=progress)
    finally:
        generator.close()
        if stats.skipped:
            logger.warning("skipped %d bad input lines (first: %s)", stats.skipped, stats.skipped_where[0])
    run.report(k, max_new_tokens)


class _Run:
    def __init__(self, fields, system, sep, label_all, skip_ungraded, done, count_truncated,
                 system_explicit: bool = False) -> None:
        self.fields, self.system, self.sep, self.label_all = fields, system, sep, label_all
        self.system_explicit, self.recorded = system_explicit, 0  # rows whose prompt_messages won over --system
        self.skip_ungraded, self.done, self.count_truncated = skip_ungraded, done, count_truncated
        self.seen: dict = {}  # key -> where it was read, to refuse a trace given twice
        self.ungraded: list[str] = []
        self.rows = self.steps = self.good = self.rollouts = self.unrolled = 0
        self.truncated = self.unknown = 0  # rollouts cut by --max-new-tokens; steps labelled null

    def label(self, generator, rows, params, settings, writer, chunk: int, progress) -> None:
        """Label `chunk` traces at a time (rows validated before their chunk is rolled out); `progress` counts the
        traces labelled or dropped as ungraded."""
        import itertools

        from rtool.prm.label import label_chunk, output_row

        def count(rollouts: int) -> None:
            self.rollouts += rollouts

        iterator = iter(rows)
        while True:
            batch = list(itertools.islice(iterator, chunk))
            if not batch:
                return
            ungraded = len(self.ungraded)
            jobs = [job for job in map(lambda row: self.prepare(row, params), batch) if job is not None]
            progress.advance(len(self.ungraded) - ungraded)
            for job in label_chunk(generator, jobs, params, on_rollouts=count):
                row = output_row(job, settings)
                writer.write(row)
                progress.advance()
                self.rows += 1
                self.steps += len(row["step_labels"])
                self.good += sum(label == 1 for label in row["step_labels"])
                self.unknown += sum(label is None for label in row["step_labels"])
                self.truncated += sum(row["step_truncated"])
                self.unrolled += sum(r == 0 and t == 0 for r, t in zip(row["step_rollouts"][:-1],
                                                                       row["step_truncated"]))

    def prepare(self, row, params):
        """The row's Job, or None (already labelled, or dropped for lack of a gold answer); UserError naming the
        row's file:line."""
        from rtool.grade.answers import grade
        from rtool.grade.fields import COMPLETION_FIELDS, prompt_id
        from rtool.prm.label import Job, Labeling, step_prefixes, trace_key_of
        from rtool.train.data import prompt_messages, system_not_applied

        try:
            key = trace_key_of(prompt_id(row, self.fields), row.get("sample", 0))
        except (TypeError, ValueError):
            raise row.error(f"field 'sample' must be a whole number, got {row.get('sample')!r}",
                            field="sample") from None
        where = f"{row.path}:{row.line}"
        if key in self.seen:
            raise row.error(f"trace (id {key[0]!r}, sample {key[1]}) was already read at {self.seen[key]}",
                            hint="give each trace its own id or sample: they key seeds and --resume")
        self.seen[key] = where
        gold = self.fields.gold(row)
        if gold is None:
            if not self.skip_ungraded:
                raise row.error("no gold answer: its rollouts cannot be graded",
                                hint="pass --answer-field, or --skip-ungraded to drop such rows")
            self.ungraded.append(where)
            return None
        if key in self.done:
            return None
        messages, recorded = prompt_messages(row, self.fields, self.system)
        self.recorded += system_not_applied(messages, recorded, self.system)
        completion = self.fields.completion(row)
        steps, prefixes = step_prefixes(completion, self.sep)
        if not steps:
            field = next((k for k in COMPLETION_FIELDS if row.get(k) is not None), "completion")
            what = "is empty" if not completion.strip() else f"holds only step separators ({self.sep!r})"
            raise row.error(f"the completion has no steps: field {field!r} {what}", field=field)
        choices = self.fields.choices(row)
        _, correct = grade(gold, completion, choices)
        labeling = Labeling(steps, prefixes, final_correct=bool(correct), label_all=self.label_all,
                            count_truncated=self.count_truncated)
        return Job(row, key, messages, gold, choices, labeling)

    def report(self, k: int, max_new_tokens: int) -> None:
        from rtool.log import logger
        from rtool.train.data import warn_recorded_wins

        if self.system_explicit:
            warn_recorded_wins("prm-label", self.recorded, self.system)
        if self.ungraded:
            logger.warning("dropped %d rows without a gold answer (first: %s)", len(self.ungraded), self.ungraded[0])
        if self.truncated:
            rule = ("graded as they are (--count-truncated)" if self.count_truncated else
                    f"they decided no label; {self.unknown} steps had only cut rollouts and are labelled null")
            logger.warning("prm-label: %d of %d rollouts (%.1f%%) were cut by --max-new-tokens %d: %s. Raise "
                           "--max-new-tokens", self.truncated, self.rollouts, 100 * self.truncated / self.rollouts,
                           max_new_tokens, rule)
        if not self.rows:
            logger.info("prm-label: no new rows written")
            return
        logger.info("prm-label: %d traces, %d steps (%.1f per trace), %.1f%% labelled 1, %d rollouts (k=%d), "
                    "%d steps labelled 0 after an earlier 0 without rollouts",
                    self.rows, self.steps, self.steps / self.rows, 100 * self.good / self.steps, self.rollouts, k,
                    self.unrolled)
