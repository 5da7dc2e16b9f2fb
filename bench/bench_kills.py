"""Kill and resume: SIGKILL a digits run at random moments, resume it until it ends, compare with an
uninterrupted run. Prints how many kills landed and how the resumed runs ended: identical
(weights and metrics.json bit for bit), different, or refused (a resume that exited with an error).

    python bench/bench_kills.py [--runs 5] [--seed 0]

Each start is killed after a random time, uniform between 1 s and the uninterrupted run's own wall
time (Paddle's import alone takes about 2 s), until one start finishes.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CMD = ["-c", "configs/mlp_digits.yml", "-o", "Global.epochs=12", "-o", "Arch.dropout=0.2", "-o", "Data.fraction=0.5", "-o", "Doctor.enable=false",
       "-o", "EarlyStopping.patience=50", "-o", "Checkpoint.save_every_minutes=0.01"]  # also inside epochs
TIMING = {"wall_time_s", "fit_time_s", "eval_time_s", "eval_time", "config"}


def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def result(run_dir):
    import paddle

    w = {k: v.numpy() for k, v in paddle.load(os.path.join(run_dir, "latest.pdparams")).items()}
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        return w, strip(json.load(f))


def finished(run_dir):
    """True when the run's metrics.json is final."""
    try:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
            return json.load(f).get("status") in ("finished", "stopped")
    except (OSError, ValueError):
        return False


def start(args, out, name):
    extra = [] if args[0] == "--resume" else ["-o", f"Global.output_dir={out}", "-o", f"Global.run_name={name}"]
    return subprocess.Popen([sys.executable, "tools/train.py", *args, *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = random.Random(a.seed)
    out = tempfile.mkdtemp(prefix="kills-")
    t0 = time.time()
    ref = start(CMD, out, "ref")
    assert ref.wait() == 0, ref.stderr.read()
    span = time.time() - t0
    ref_w, ref_m = result(os.path.join(out, "mlp_digits", "ref"))
    counts = {"kills": 0, "identical": 0, "different": 0, "refused": 0}
    for i in range(a.runs):
        run = os.path.join(out, "mlp_digits", f"k{i}")
        args = CMD
        for _ in range(30):
            proc = start(args, out, f"k{i}")
            try:
                code = proc.wait(timeout=rng.uniform(1.0, span))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                counts["kills"] += 1
                code = 0 if finished(run) else None  # killed while exiting, after its final metrics.json: done
            if code is None or (code != 0 and not os.path.exists(os.path.join(run, "latest.pdstates"))):
                if not os.path.exists(os.path.join(run, "latest.pdstates")):  # before its first checkpoint
                    shutil.rmtree(run, ignore_errors=True)
                    args = CMD
                else:
                    args = ["--resume", run]
                continue
            if code != 0:
                err = proc.stderr.read().strip().splitlines()
                counts["refused"] += 1
                print(f"run {i}: refused: {err[-1] if err else code}")
                break
            w, m = result(run)
            same = w.keys() == ref_w.keys() and all(np.array_equal(w[k], ref_w[k]) for k in w) and m == ref_m
            counts["identical" if same else "different"] += 1
            break
    print(f"{a.runs} runs, {counts['kills']} kills: resumed identical {counts['identical']}, "
          f"different {counts['different']}, refused {counts['refused']}")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
