"""Benchmark rtool merge-bai: whole-process wall time and peak RSS (`/usr/bin/time -v`), side by side in one run.

    python bench/merge/make_smollm2.py /tmp/bench-merge/smollm2        # case (a) inputs, 3 x 538 MB
    python bench/merge/make_synthetic.py /tmp/bench-merge/synthetic    # case (b) inputs, 3 x 1.98 GB
    python bench/merge/run.py --root /tmp/bench-merge --mergekit-yaml /work/venv-mergekit/bin/mergekit-yaml

(a) SmolLM2-135M-Instruct fp32: rtool (one pass) against mergekit as two `mergekit-yaml` runs (stage 1 to a
    temporary model, stage 2 from it), same weights, models listed in the order of the formula.
(b) three synthetic ~0.5B Llamas: rtool against the I/O floor (bench/merge/floor.py: read the three inputs once,
    write one output of the same size, fsync), with pread and with the inputs memory-mapped as rtool reads them.
Contenders alternate within each repetition; inputs are read into the file cache before every measured run so
that all of them start warm. RSS is the peak resident set of the process (mapped file pages count while mapped).
Prints a markdown table and writes the raw numbers to --json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROLES = ("reasoning", "instruct", "pretrained")


def timed(command: list[str]) -> dict:
    """Run `command` under /usr/bin/time -v; return wall seconds, user and sys seconds, peak RSS in MB."""
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    text = result.stderr
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
    seconds = sum(float(part) * 60**k for k, part in enumerate(reversed(wall.split(":"))))
    return {"wall_s": seconds,
            "user_s": float(re.search(r"User time \(seconds\): (\S+)", text).group(1)),
            "sys_s": float(re.search(r"System time \(seconds\): (\S+)", text).group(1)),
            "rss_mb": int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024}


def warm(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.readinto(_BUFFER):
                pass


_BUFFER = bytearray(64 << 20)


def rtool(models: Path, out: Path, *extra: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    rtool_bin = str(Path(sys.executable).parent / "rtool")
    return timed([rtool_bin, "-q", "merge-bai", *(x for role in ROLES for x in (f"--{role}", str(models / role))),
                  "--out", str(out), *extra])


def mergekit(models: Path, work: Path, binary: str, w: float, v: float) -> dict:
    """Two mergekit-yaml runs; wall and CPU times add up, the peak RSS is the larger one."""
    mid, out = work / "mk-mid", work / "mk-out"
    for path in (mid, out):
        shutil.rmtree(path, ignore_errors=True)
    stages = [[(models / "reasoning", w), (models / "instruct", 1 - w)], [(mid, v), (models / "pretrained", 1 - v)]]
    total = {"wall_s": 0.0, "user_s": 0.0, "sys_s": 0.0, "rss_mb": 0.0}
    for k, pairs in enumerate(stages):
        config = work / f"mk-stage{k + 1}.yaml"
        config.write_text(json.dumps({"merge_method": "linear", "dtype": "float32", "parameters": {"normalize": True},
                                      "models": [{"model": str(m), "parameters": {"weight": x}} for m, x in pairs]}))
        one = timed([binary, str(config), str(mid if k == 0 else out)])
        for key in ("wall_s", "user_s", "sys_s"):
            total[key] += one[key]
        total["rss_mb"] = max(total["rss_mb"], one["rss_mb"])
    return total


def floor(models: Path, out: Path, *extra: str) -> dict:
    out.unlink(missing_ok=True)
    files = [str(models / role / "model.safetensors") for role in ROLES]
    return timed([sys.executable, str(HERE / "floor.py"), *extra, *files, str(out)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/bench-merge"))
    parser.add_argument("--mergekit-yaml", help="mergekit-yaml of a mergekit venv (case a is skipped without it)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default="a,b")
    parser.add_argument("--json", type=Path, default=Path("/tmp/bench-merge/results.json"))
    args = parser.parse_args()
    work = args.root / "work"
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {}
    cases = args.cases.split(",")
    smollm2, synthetic = args.root / "smollm2", args.root / "synthetic"
    for _ in range(args.repeat):
        if "a" in cases:
            inputs = [smollm2 / role / "model.safetensors" for role in ROLES]
            if args.mergekit_yaml:
                warm(inputs)
                runs.setdefault("a: mergekit, 2 x mergekit-yaml", []).append(
                    mergekit(smollm2, work, args.mergekit_yaml, 0.5, 0.5))
            warm(inputs)
            runs.setdefault("a: rtool merge-bai", []).append(rtool(smollm2, work / "rtool-a"))
            warm(inputs)
            runs.setdefault("a: rtool merge-bai --w 0.3 --v 0.6", []).append(
                rtool(smollm2, work / "rtool-a", "--w", "0.3", "--v", "0.6"))
        if "b" in cases:
            inputs = [synthetic / role / "model.safetensors" for role in ROLES]
            warm(inputs)
            runs.setdefault("b: floor (read 3, write 1, fsync)", []).append(floor(synthetic, work / "floor.bin"))
            warm(inputs)
            runs.setdefault("b: floor --mmap (read in place)", []).append(
                floor(synthetic, work / "floor.bin", "--mmap"))
            warm(inputs)
            runs.setdefault("b: rtool merge-bai", []).append(rtool(synthetic, work / "rtool-b"))
            warm(inputs)
            runs.setdefault("b: rtool merge-bai --w 0.3 --v 0.6", []).append(
                rtool(synthetic, work / "rtool-b", "--w", "0.3", "--v", "0.6"))
    shutil.rmtree(work, ignore_errors=True)
    args.json.write_text(json.dumps(runs, indent=2))
    print("| case | wall s (median) | user s | sys s | peak RSS MB (max) | runs |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, results in runs.items():
        med = {k: statistics.median(r[k] for r in results) for k in ("wall_s", "user_s", "sys_s")}
        print(f"| {name} | {med['wall_s']:.2f} | {med['user_s']:.2f} | {med['sys_s']:.2f} | "
              f"{max(r['rss_mb'] for r in results):.0f} | {len(results)} |")


if __name__ == "__main__":
    main()
