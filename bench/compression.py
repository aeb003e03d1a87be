"""Compression against its parent: pruning, a distilled student, and step distillation.

One parent (green recipe, ``--preset``, MNIST 16x16, ``--parent-steps``) is trained, or reused with
``--parent DIR``. Then, each through its own CLI command and measured by it:

- ``greendiff prune --ratio R`` (Diff-Pruning Taylor importance) and ``--finetune-steps`` steps;
- ``greendiff distill --student-preset P`` for ``--student-steps`` steps (teacher forwards counted);
- ``greendiff distill-steps --rounds K`` from ``--teacher-steps`` DDIM steps, ``--steps-per-round`` each.

Every model is then scored by the same ``greendiff eval`` (``--eval-n`` samples x ``--eval-seeds``
seeds, MNIST features): parent, pruned and student at ``--eval-steps`` DDIM steps; the teacher at its
``--teacher-steps`` and the few-step student at its own. Compression energy excludes the commands'
own evaluations; the parent's is its whole training run.

    python bench/compression.py [--parent DIR] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from greendiff.units import kwh_to_joules  # noqa: E402

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")
HERE = Path(__file__).resolve().parent


def cli(args: list[str], env: dict) -> str:
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"greendiff {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def only_run(folder: Path) -> Path:
    (run_dir,) = [p for p in folder.iterdir() if p.is_dir()]
    return run_dir


def fid(run_dir: Path, steps: int, args, env: dict) -> dict:
    report = json.loads(cli(["eval", "--run", str(run_dir), "--samples", str(args.eval_n), "--seeds", str(args.eval_seeds),
                             "--sample-steps", str(steps), "--kid-subset", str(min(1000, args.eval_n)), "--json"], env))
    fids = [r["fid"] for r in report["results"]]
    return {"fid": statistics.mean(fids), "fid_std": statistics.stdev(fids) if len(fids) > 1 else 0.0, "steps": steps,
            "eval_kwh": report["energy_kwh"]}


def change(new: float, old: float) -> float:
    return (new - old) / old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=Path, help="reuse a trained parent run directory")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--parent-steps", type=int, default=2000)
    parser.add_argument("--ratio", type=float, default=0.35)
    parser.add_argument("--finetune-steps", type=int, default=800)
    parser.add_argument("--prune-lr", type=float, default=0.0, help="fine-tuning LR (0: the parent's)")
    parser.add_argument("--prune-distill", action="store_true", help="fine-tune against the parent's predictions")
    parser.add_argument("--student-preset", default="nano")
    parser.add_argument("--student-init-ratio", type=float, default=0.0,
                        help="> 0: the student is the parent pruned by this ratio (no fine-tuning), not a preset")
    parser.add_argument("--student-lr", type=float, default=0.0, help="student LR (0: the command's default)")
    parser.add_argument("--student-steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--teacher-steps", type=int, default=40)
    parser.add_argument("--steps-per-round", type=int, default=300)
    parser.add_argument("--steps-lr", type=float, default=0.0, help="LR of each round (0: the command's default)")
    parser.add_argument("--eval-n", type=int, default=1000)
    parser.add_argument("--eval-seeds", type=int, default=2)
    parser.add_argument("--eval-steps", type=int, default=20)
    parser.add_argument("--only", default="prune,distill,steps", help="comma-separated subset")
    parser.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--write-benchmarks", action="store_true")
    parser.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md from the saved results")
    parser.add_argument("--tag", default="", help="a variant: results in compression-TAG.json, its own section")
    args = parser.parse_args()
    key = f"compression-{args.tag}" if args.tag else "compression"
    if args.render:
        saved = json.loads((HERE / "results" / f"{key}.json").read_text())
        write_section(key, render(saved, argparse.Namespace(**{**vars(args), **saved["args"]})))
        return
    only = set(args.only.split(","))
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GREENDIFF_LEDGER": f"{work}/ledger.sqlite", "GREENDIFF_CACHE_DIR": f"{work}/cache",
               "GREENDIFF_COUNTRY": "FRA"}
        if args.parent is None:
            cli(["train", "--preset", args.preset, "--max-steps", str(args.parent_steps), "--name", "parent",
                 "--output-dir", str(work / "parent"), "--set", f"run.sample_every={args.parent_steps}",
                 "--set", f"run.checkpoint_every={args.parent_steps}"], env)
            parent = only_run(work / "parent")
        else:
            parent = args.parent
        parent_kwh = json.loads((parent / "emissions.json").read_text())["run_total_energy_kwh"]
        command_line = " ".join(a for a in sys.argv[1:] if not a.startswith("--work") and a != str(args.work))
        result = {"date": today(), "machine": machine(), "command": f"python bench/compression.py {command_line}".strip(),
                  "args": {k: v if isinstance(v, (int, float, str)) else str(v) for k, v in vars(args).items()},
                  "parent": {"run": str(parent), "training_kwh": parent_kwh, "quality": fid(parent, args.eval_steps, args, env)}}
        print(f"parent: {parent_kwh * 1e3:.2f} Wh, FID {result['parent']['quality']['fid']:.2f}", flush=True)

        def command(key: str, argv: list[str], report_name: str, score: bool = True) -> tuple[Path, dict]:
            """Run one compression command (its own evaluations off), read its report, score its model."""
            cli([*argv, "--eval-samples", "0", "--output-dir", str(work / key)], env)
            run_dir = only_run(work / key)
            report = json.loads((run_dir / report_name).read_text())
            if score:
                result[key] = {"report": report, "quality": fid(run_dir, args.eval_steps, args, env)}
                print(f"{key}: FID {result[key]['quality']['fid']:.2f}, {report['energy']['cost_vs_parent']:.1%} of parent",
                      flush=True)
            return run_dir, report

        if "prune" in only:
            command("prune", ["prune", "--run", str(parent), "--ratio", str(args.ratio), "--finetune-steps",
                              str(args.finetune_steps), *(["--lr", str(args.prune_lr)] if args.prune_lr else []),
                              *(["--distill"] if args.prune_distill else [])], "compression.json")
        if "distill" in only:
            student = ["--student-preset", args.student_preset]
            if args.student_init_ratio:
                init_dir, init = command("student-init", ["prune", "--run", str(parent), "--ratio", str(args.student_init_ratio),
                                                          "--finetune-steps", "0"], "compression.json", score=False)
                result["student_init"] = {"report": init}
                student = ["--student-init", str(init_dir / "pruned-unet")]
            command("distill", ["distill", "--teacher", str(parent), *student, "--max-steps", str(args.student_steps),
                                *(["--lr", str(args.student_lr)] if args.student_lr else [])], "distill.json")
        if "steps" in only:
            run_dir, report = command("fewstep", ["distill-steps", "--teacher", str(parent), "--rounds", str(args.rounds),
                                                  "--teacher-steps", str(args.teacher_steps), "--steps-per-round",
                                                  str(args.steps_per_round),
                                                  *(["--lr", str(args.steps_lr)] if args.steps_lr else [])],
                                      "distill_steps.json", score=False)
            final = args.teacher_steps >> args.rounds
            rows = [{**row, "quality": fid(Path(row["run"]) if "run" in row else parent, row["steps"], args, env)}
                    for row in report["rows"]]
            result["steps"] = {"report": report, "rows": rows, "final_steps": final}
            print("steps: " + ", ".join(f"{r['model']}@{r['steps']} FID {r['quality']['fid']:.2f}" for r in rows), flush=True)
    result["duration_s"] = time.time() - t0
    (HERE / "results" / f"{key}.json").write_text(json.dumps(result, indent=2))
    if args.write_benchmarks:
        write_section(key, render(result, args))
    print(render(result, args))


def render(result: dict, args) -> str:
    parent = result["parent"]
    lines = [f"## Compression (`bench/compression.py`){f' — variant {args.tag}' if args.tag else ''}", "",
             f"- Command: `{result['command']}` ({result['duration_s'] / 60:.0f} min)",
             f"- Machine: {result['machine']}", f"- Date: {result['date']}",
             f"- Parent: green recipe, {args.preset} UNet, MNIST 16x16, {args.parent_steps} steps, "
             f"{parent['training_kwh'] * 1e3:.3f} Wh (whole run). Quality: `greendiff eval`, {args.eval_n} samples x "
             f"{args.eval_seeds} seeds, MNIST features; FID mean ± std over seeds. Compression energy: the command's "
             "ledger run without its own evaluations.", ""]
    pq = parent["quality"]
    if "prune" in result:
        r, q = result["prune"]["report"], result["prune"]["quality"]
        e = r["energy"]
        ok = r["macs_reduction"] >= 2 and change(q["fid"], pq["fid"]) <= 0.10 and e["cost_vs_parent"] <= 0.20
        flags = (f" --lr {args.prune_lr:g}" if args.prune_lr else "") + (" --distill" if args.prune_distill else "")
        lines += [f"### Pruning: `greendiff prune --ratio {args.ratio} --finetune-steps {args.finetune_steps}{flags}` "
                  "(Taylor, Diff-Pruning)", "",
                  "| model | channels | params | MACs / image | FID @ %d DDIM | energy |" % args.eval_steps, "|---|---|---:|---:|---:|---:|",
                  f"| parent | {r['parent_model']['block_out_channels']} | {r['parent_model']['params']:,} | "
                  f"{r['parent_model']['macs_per_image'] / 1e6:.1f} M | {pq['fid']:.2f} ± {pq['fid_std']:.2f} | {parent['training_kwh'] * 1e3:.3f} Wh (training) |",
                  f"| pruned + fine-tuned | {r['pruned_model']['block_out_channels']} | {r['pruned_model']['params']:,} | "
                  f"{r['pruned_model']['macs_per_image'] / 1e6:.1f} M | {q['fid']:.2f} ± {q['fid_std']:.2f} | {e['cost_kwh'] * 1e3:.3f} Wh (pruning "
                  f"{e['phases_kwh'].get('prune', 0) * 1e3:.3f} + fine-tuning) |", "",
                  f"**{r['macs_reduction']:.2f}x fewer MACs**, FID {change(q['fid'], pq['fid']):+.1%}, energy "
                  f"**{e['cost_vs_parent']:.1%}** of the parent's. Target ≥ 2x MACs, FID within 10 %, ≤ 20 % energy → "
                  f"**{'met' if ok else 'NOT met'}**. Time-embedding refit residual {r['time_refit_residual']:.1%}.", ""]
    if "distill" in result:
        r, q = result["distill"]["report"], result["distill"]["quality"]
        e = dict(r["energy"])
        how, init_note = f"--student-preset {args.student_preset}", []
        if "student_init" in result:  # the pruning that made the student is part of its cost
            init_kwh = result["student_init"]["report"]["energy"]["cost_kwh"]
            e["cost_kwh"] += init_kwh
            e["cost_vs_parent"] = e["cost_kwh"] / parent["training_kwh"]
            how = "--student-init PRUNED/pruned-unet"
            init_note = [f"The student starts from the teacher pruned by `greendiff prune --ratio {args.student_init_ratio} "
                         f"--finetune-steps 0` ({init_kwh * 1e3:.3f} Wh, counted in the student's energy).", ""]
        ok = r["params_reduction"] >= 4 and change(q["fid"], pq["fid"]) <= 0.15 and e["cost_vs_parent"] <= 0.30
        lines += [f"### Student: `greendiff distill {how} --max-steps {args.student_steps}"
                  + (f" --lr {args.student_lr:g}" if args.student_lr else "") + "`", "", *init_note,
                  "| model | params | FID @ %d DDIM | energy |" % args.eval_steps, "|---|---:|---:|---:|",
                  f"| teacher | {r['teacher_model']['params']:,} | {pq['fid']:.2f} ± {pq['fid_std']:.2f} | {parent['training_kwh'] * 1e3:.3f} Wh |",
                  f"| student | {r['student_model']['params']:,} | {q['fid']:.2f} ± {q['fid_std']:.2f} | {e['cost_kwh'] * 1e3:.3f} Wh "
                  "(teacher forwards included) |", "",
                  f"**{r['params_reduction']:.1f}x fewer parameters**, FID {change(q['fid'], pq['fid']):+.1%}, energy "
                  f"**{e['cost_vs_parent']:.1%}** of the teacher's. Target ≥ 4x, within 15 %, ≤ 30 % → **{'met' if ok else 'NOT met'}**.", ""]
    if "steps" in result:
        rows, final = result["steps"]["rows"], result["steps"]["final_steps"]
        e = result["steps"]["report"]["energy"]
        teacher_fid = rows[0]["quality"]["fid"]
        student_fid = rows[-1]["quality"]["fid"]
        ok = change(student_fid, teacher_fid) <= 0.20 and rows[0]["steps"] >= 8 * rows[-1]["steps"]
        lines += [f"### Step distillation: `greendiff distill-steps --rounds {args.rounds} --teacher-steps {args.teacher_steps} "
                  f"--steps-per-round {args.steps_per_round}" + (f" --lr {args.steps_lr:g}" if args.steps_lr else "") + "`", "",
                  "| model | DDIM steps | FID | sampling energy / image |", "|---|---:|---:|---:|"]
        for row in rows:
            q = row["quality"]
            lines.append(f"| {row['model']} | {row['steps']} | {q['fid']:.2f} ± {q['fid_std']:.2f} | "
                         f"{kwh_to_joules(row['sample_kwh_per_image']) * 1e3:.2f} mJ |")
        lines += ["", f"{args.teacher_steps} → {final} steps ({args.teacher_steps // final}x fewer): FID "
                      f"{change(student_fid, teacher_fid):+.1%} vs the teacher at {args.teacher_steps}; distillation cost "
                      f"{e['cost_kwh'] * 1e3:.3f} Wh ({e['cost_vs_parent']:.1%} of the teacher's training). Target 8x fewer "
                      f"steps within 20 % → **{'met' if ok else 'NOT met'}**.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
