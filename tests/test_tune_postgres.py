"""Two tuning workers on one study in a real PostgreSQL server (Debian's ``postgresql``, installed by ``.ci/run``).

The server is a fresh cluster in a temporary directory on 127.0.0.1 (tests/pg_server.py),
stopped afterwards. Where PostgreSQL is missing the test skips, except under
``REQUIRE_POSTGRES=1`` (set by ``.ci/run``), where that is a failure.
"""
import csv
import os
import subprocess
import sys

import pytest
import yaml
from pg_server import PostgresServer, missing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIALS_PER_WORKER = 3


@pytest.fixture(scope="module")
def pg():
    why = missing()
    if why:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {why}")
        pytest.skip(why)
    with PostgresServer() as server:
        yield server


def worker(url, out, space):
    cmd = [sys.executable, os.path.join(ROOT, "tools/tune.py"), "-c", os.path.join(ROOT, "configs/mlp_digits.yml"),
           "--space", space, "--trials", str(TRIALS_PER_WORKER), "--storage", url, "--study", "pgtest",
           "--pruner", "none", "-o", f"Global.output_dir={out}", "-o", "Global.epochs=2", "-o", "Global.verbose=0",
           "-o", "Doctor.enable=false", "-o", "VisualDL.histograms_every_epochs=0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_workers_share_one_study(pg, tmp_path):
    space = tmp_path / "space.yml"
    space.write_text("Optimizer.lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}\n"
                     "Arch.dropout: {type: float, low: 0.0, high: 0.3}\n")
    out = tmp_path / "out"
    procs = [worker(pg.url, str(out), str(space)) for _ in range(2)]
    logs = [p.communicate(timeout=400)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-2000:]

    import optuna

    from utils.tune import open_storage

    study = optuna.load_study(study_name="pgtest", storage=open_storage(pg.url))
    trials = study.get_trials(deepcopy=False)
    # every trial recorded exactly once: 2 workers x 3 trials, distinct numbers, all finished
    assert len(trials) == 2 * TRIALS_PER_WORKER
    assert sorted(t.number for t in trials) == list(range(2 * TRIALS_PER_WORKER))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]

    study_dir = out / "mlp_digits" / "tune_pgtest"
    run_dirs = sorted(d for d in os.listdir(study_dir) if d.startswith("trial_"))
    assert run_dirs == sorted(f"trial_{t.number}" for t in trials)
    for d in run_dirs:  # each an ordinary run: one config, one metrics file, one VisualDL log
        files = os.listdir(study_dir / d)
        assert "config.yml" in files and "metrics.json" in files
        assert sum(f.startswith("vdlrecords.") for f in files) == 1

    # the results the last worker wrote cover every trial, and the best config is the best trial's
    with open(study_dir / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["number"]) for r in rows) == list(range(2 * TRIALS_PER_WORKER))
    best = study.best_trial
    with open(study_dir / "best_config.yml") as f:
        best_cfg = yaml.safe_load(f)
    assert best_cfg["Optimizer"]["lr"] == pytest.approx(best.params["Optimizer.lr"], rel=1e-9)
    assert best_cfg["Arch"]["dropout"] == pytest.approx(best.params["Arch.dropout"], rel=1e-9)
    assert best.value == max(t.value for t in trials)
