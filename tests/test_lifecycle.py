"""A run's life from launch to its last file: one directory per launch, owned by one process, a
resume checked against the run, metrics.json on every exit path, exit codes, signals, kills.

The kill test interrupts a digits run with SIGKILL at random moments and at injected points (inside
an evaluation, after the last checkpoint, right after a checkpoint) and resumes it until it
finishes: the final weights and the metrics must be those of an uninterrupted run, bit for bit.
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from tests.layering import ROOT
from tests.tool_asserts import assert_user_error
from utils.config import load_config
from utils.rundir import RunLock, new_run_dir

BASE = ["-c", "configs/mlp_digits.yml", "-o", "Global.epochs=4", "-o", "Data.fraction=0.5", "-o", "Doctor.enable=false",
        "-o", "EarlyStopping.patience=50", "-o", "VisualDL.histograms_every_epochs=0"]
# timings, and the config file the last process read (a resume reads RUN/config.yml)
TIMING = {"wall_time_s", "fit_time_s", "eval_time_s", "eval_time", "config"}


def train_tool(*args, out, env=None, wait=True):
    cmd = [sys.executable, "tools/train.py", *args, "-o", f"Global.output_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def resume_tool(run_dir, *args, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "tools/train.py", "--resume", str(run_dir), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def metrics_of(run_dir):
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def without_timing(x):
    if isinstance(x, dict):
        return {k: without_timing(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [without_timing(v) for v in x]
    return x


def weights(run_dir, name="latest"):
    return {k: v.numpy() for k, v in paddle.load(os.path.join(str(run_dir), f"{name}.pdparams")).items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of BASE."""
    out = tmp_path_factory.mktemp("ref")
    r = train_tool(*BASE, "-o", "Global.run_name=ref", out=out)
    assert r.returncode == 0, r.stderr[-2000:]
    run = out / "mlp_digits" / "ref"
    return run, metrics_of(run)


# ----------------------------------------------------------------------------- the run directory

def test_simultaneous_launches_get_their_own_directories(tmp_path):
    cfg = load_config(os.path.join(ROOT, "configs", "mlp_digits.yml"), [f"Global.output_dir={tmp_path}"])
    dirs = [new_run_dir(cfg) for _ in range(10)]  # well within one second
    assert len(set(dirs)) == 10 and all(os.path.isdir(d) for d in dirs)
    names = [os.path.basename(d) for d in dirs]
    if names[1].startswith(names[0]):  # the same second: the second launch gets the suffix
        assert names[1] == f"{names[0]}-2"


def test_four_processes_launched_at_once_each_finish_their_own_run(tmp_path):
    procs = [train_tool(*BASE, "-o", "Global.epochs=1", out=tmp_path, wait=False) for _ in range(4)]
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0] * 4, [p.stderr.read()[-1000:] for p in procs]
    runs = os.listdir(tmp_path / "mlp_digits")
    assert len(runs) == 4 and all(metrics_of(tmp_path / "mlp_digits" / r)["status"] == "finished" for r in runs)


def test_a_live_run_cannot_be_resumed_and_a_stale_lock_is_taken_over(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    os.remove(run / "metrics.json")  # ended without its final metrics: a resume would finish it
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(run / ".lock", "w", encoding="utf-8") as f:
            json.dump({"pid": sleeper.pid, "host": socket.gethostname(), "started": "then"}, f)
        r = resume_tool(run)
        assert_user_error(r, "in use by process", str(sleeper.pid))
        assert not (run / "metrics.json").exists()  # nothing written
    finally:
        sleeper.kill()
        sleeper.wait()
    r = resume_tool(run)  # the holder is gone now
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"took over the lock of process {sleeper.pid}" in r.stdout
    assert not (run / ".lock").exists() and metrics_of(run)["status"] == "finished"


def test_lock_is_held_while_training_and_released_after(tmp_path):
    lock = RunLock(str(tmp_path))
    assert lock.acquire() is None and (tmp_path / ".lock").exists()
    assert RunLock(str(tmp_path)).acquire() is None  # the same process holds it already
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_resume_refuses_a_changed_recipe_but_may_train_longer(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    r = resume_tool(run, "-o", "Optimizer.lr=0.5", "-o", "DataLoader.batch_size=32", "-o", "Global.epochs=6")
    line = assert_user_error(r, "Optimizer.lr", "DataLoader.batch_size", "would change its result")
    assert "Global.epochs: " not in line  # listed among the changes only if it were refused
    r = resume_tool(run, "-o", "Global.epochs=5")
    assert r.returncode == 0, r.stderr[-2000:]
    m = metrics_of(run)
    assert m["epochs_run"] == 5 and [h["epoch"] for h in m["history"]] == [1, 2, 3, 4, 5]


def test_output_dir_that_cannot_be_written_is_one_line_before_the_data(tmp_path):
    (tmp_path / "a_file").write_text("x")
    r = train_tool(*BASE, out=tmp_path / "a_file" / "out")
    assert_user_error(r, "Global.output_dir", "cannot write")


# ----------------------------------------------------------------------------- metrics.json and exits

def test_finished_run_without_final_metrics_is_finished_by_resume(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    os.remove(run / "metrics.json")
    r = resume_tool(run)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "writing them (no more training)" in r.stdout
    assert without_timing(metrics_of(run)) == without_timing(reference[1])
    assert same_weights(weights(run), weights(reference[0]))
    assert_user_error(resume_tool(run), "already finished")  # now it is whole: nothing to do


def test_nan_stop_exits_3_with_metrics(tmp_path):
    r = train_tool(*BASE, "-o", "Optimizer.lr=1e12", "-o", "Global.run_name=nan", out=tmp_path)
    assert r.returncode == 3, r.stderr[-2000:]
    m = metrics_of(tmp_path / "mlp_digits" / "nan")
    assert m["status"] == "stopped" and m["stopped_by"] == "nan_guard" and "training loss is" in m["stop_reason"]
    json.loads(json.dumps(m), parse_constant=lambda c: pytest.fail(f"non-JSON number {c}"))


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signals_leave_metrics_and_the_resume_command(tmp_path, sig, code, word):
    p = train_tool(*BASE, "-o", "Global.epochs=30", "-o", "Global.run_name=sig", out=tmp_path, wait=False)
    run = tmp_path / "mlp_digits" / "sig"
    deadline = time.time() + 300
    while not (run / "latest.pdstates").exists() and time.time() < deadline:
        time.sleep(0.2)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == code, err[-2000:]
    assert word in err and "Traceback" not in err and "C++" not in err + out
    assert f"python tools/train.py --resume {run}" in out
    m = metrics_of(run)
    assert m["status"] == "interrupted" and m["history"]
    assert not (run / ".lock").exists()


# ----------------------------------------------------------------------------- kills

KILL_AT = """
import os, runpy, sys
sys.path.insert(0, os.getcwd())
point, n = os.environ["KILL_AT"].split(":")
seen = [0]
def maybe_kill():
    seen[0] += 1
    if seen[0] == int(n):
        os.kill(os.getpid(), 9)
import utils.training.callbacks as cb, utils.training.checkpointer as ckr, utils.trainer as tr
if point == "eval":  # inside the n-th evaluation, before its result is recorded
    real = cb.PeriodicEval.run
    def run(self):
        maybe_kill()
        return real(self)
    cb.PeriodicEval.run = run
elif point == "after_checkpoint":  # right after the n-th checkpoint was written
    real = ckr.Checkpointer._save
    def save(self, *a, **k):
        out = real(self, *a, **k)
        maybe_kill()
        return out
    ckr.Checkpointer._save = save
elif point == "final_metrics":  # after the last checkpoint, before the final metrics.json
    real = tr.write_metrics
    def write(run, status="running", metrics=None):
        if metrics is not None:
            maybe_kill()
        return real(run, status, metrics)
    tr.write_metrics = write
sys.argv = ["tools/train.py"] + sys.argv[1:]
runpy.run_path("tools/train.py", run_name="__main__")
"""


def run_until_finished(run, first_cmd, kill, max_rounds=8):
    """Start (or resume) and kill until a run ends whole; returns the kills that landed."""
    kills, args = 0, first_cmd
    for _ in range(max_rounds):
        p = kill(args)
        if p == 0:
            return kills
        if p == 2 and not (run / "latest.pdstates").exists():  # killed before its first checkpoint
            shutil.rmtree(run, ignore_errors=True)
            args = first_cmd
            continue
        assert p == -9, p
        kills += 1
        args = ["--resume", str(run)]
    raise AssertionError("the run never finished")


@pytest.mark.parametrize("point, n", [("eval", 2), ("after_checkpoint", 3), ("final_metrics", 1)])
def test_kill_at_injected_points_then_resume_is_bit_identical(tmp_path, reference, point, n):
    run = tmp_path / "mlp_digits" / "k"
    script = tmp_path / "kill_at.py"
    script.write_text(KILL_AT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT": f"{point}:{n}"}

    def launch(args):
        extra = [] if args[0] == "--resume" else ["-o", f"Global.output_dir={tmp_path}", "-o", "Global.run_name=k"]
        r = subprocess.run([sys.executable, str(script), *args, *extra], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
        env["KILL_AT"] = "none:0"  # only the first launch is killed
        return r.returncode

    assert run_until_finished(run, BASE, launch) == 1
    assert same_weights(weights(run), weights(reference[0]))
    assert same_weights(weights(run, "best_model"), weights(reference[0], "best_model"))
    assert without_timing(metrics_of(run)) == without_timing(reference[1])


def test_random_kills_then_resume_is_bit_identical(tmp_path, reference):
    rng = random.Random(7)
    run = tmp_path / "mlp_digits" / "r"

    def launch(args):
        extra = [] if args[0] == "--resume" else ["-o", f"Global.output_dir={tmp_path}", "-o", "Global.run_name=r"]
        p = subprocess.Popen([sys.executable, "tools/train.py", *args, *extra], cwd=ROOT,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            return p.wait(timeout=rng.uniform(3.0, 9.0))  # Paddle's import alone takes ~2 s
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    run_until_finished(run, BASE, launch, max_rounds=12)
    assert same_weights(weights(run), weights(reference[0]))
    assert without_timing(metrics_of(run)) == without_timing(reference[1])


def test_kill_after_a_checkpoint_inside_an_epoch_resumes_that_step_exactly(tmp_path):
    """Checkpoint.save_every_minutes writes latest between steps (here after every step); with
    dropout on, the resumed steps need the same batches and the same RNG state to match."""
    cmd = [*BASE, "-o", "Arch.dropout=0.3", "-o", "Checkpoint.save_every_minutes=1e-6"]
    ref = train_tool(*cmd, "-o", "Global.run_name=ref", out=tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "mlp_digits" / "k"
    script = tmp_path / "kill_at.py"
    script.write_text(KILL_AT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT": "after_checkpoint:5"}
    r = subprocess.run([sys.executable, str(script), *cmd, "-o", f"Global.output_dir={tmp_path}", "-o", "Global.run_name=k"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == -9, r.stderr[-2000:]
    state = json.load(open(run / "latest.pdstates"))
    assert 0 < state["progress"]["epoch_step"] < 11 and state["progress"]["epochs_done"] == 0 and "rng" in state
    r = resume_tool(run)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"at epoch 1, step {state['progress']['global_step']}" in r.stdout
    assert same_weights(weights(run), weights(tmp_path / "mlp_digits" / "ref"))
    assert without_timing(metrics_of(run)) == without_timing(metrics_of(tmp_path / "mlp_digits" / "ref"))
