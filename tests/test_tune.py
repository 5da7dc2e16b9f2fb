"""tools/tune.py: search-space checks, storage errors, a tiny study on digits, pruning, NaN trials."""
import csv
import os
import socket
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from tool_asserts import assert_user_error

from utils.config import load_config, parse_override
from utils.errors import ConfigError, UserError
from utils.tune import (
    TrialReporter,
    check_grid,
    edge_warnings,
    failure_reason,
    load_space,
    open_storage,
    param_overrides,
    prepare,
    run_study,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = os.path.join(ROOT, "configs", "mlp_digits.yml")
# 1-2 epochs of the MLP on digits (23 steps/epoch): a trial takes well under a second.
FAST = ["Global.verbose=0", "Global.print_flops=false", "Doctor.enable=false"]


def quiet(*a, **k):
    pass


def space_file(tmp_path, text, name="space.yml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def mlp_cfg(*overrides):
    return load_config(MLP, list(overrides))


# ----------------------------------------------------------------------------- space parsing

@pytest.mark.parametrize("text, fragments", [
    ("Optimizer.lrr: {type: float, low: 1.0e-3, high: 0.1}", ["unknown key 'Optimizer.lrr'", "did you mean 'lr'"]),
    ("Optimiser.lr: {type: float, low: 1.0e-3, high: 0.1}", ["unknown section 'Optimiser'", "did you mean 'Optimizer'"]),
    ("Optimizer.lr: {type: float, low: 0.1, high: 0.01}", ["Optimizer.lr", "empty range", "low 0.1 >= high 0.01"]),
    ("Arch.dropout: {type: float, low: 0.3, high: 0.3}", ["empty range"]),
    ("Optimizer.lr: {type: float, low: 0, high: 0.1, log: true}", ["log: true needs low > 0"]),
    ("Optimizer.lr: {type: double, low: 1.0e-3, high: 0.1}", ["unknown type 'double'", "did you mean 'float'"]),
    ("Optimizer.lr: {type: float, low: 1.0e-3, hihg: 0.1}", ["unknown field 'hihg'", "did you mean 'high'"]),
    ("Optimizer.lr: {type: float, low: 1.0e-3}", ["missing 'high'"]),
    ("Optimizer.lr: {type: float, low: abc, high: 0.1}", ["'low' must be a number"]),
    ("Optimizer.name: {type: categorical, choices: []}", ["'choices' must be a non-empty list"]),
    ("Optimizer.name: {type: categorical, choices: [sgd, AdamW]}", ["'sgd' is not one of", "did you mean 'SGD'"]),
    ("Arch.dropot: {type: float, low: 0.0, high: 0.5}", ["no argument 'dropot'", "did you mean 'dropout'"]),
    ("Arch.hidden: {type: int, low: 32, high: 128}", ["takes a list", "type: categorical"]),
    ("Arch.name: {type: categorical, choices: [mlp, mpl2]}", ["unknown model 'mpl2'"]),
    ("Global.epochs: {type: float, low: 1, high: 5}", ["Global.epochs takes int", "use type: int"]),
    ("Global.run_name: {type: categorical, choices: [a, b]}", ["set by the tuner"]),
    ("Optimizer.lr: 0.1", ["expected a mapping like"]),
    ("Optimizer:\n  lr: {type: float, low: 1.0e-3, high: 0.1}", ["dotted keys"]),
    ("Optimizer.lr: {type: float, low: 1.0e-3, high: 0.1, log: true, step: 0.01}", ["cannot be combined"]),
    ("Optimizer.lr: {type: float, low: 1.0e-3, high: 0.1, grid: [0.5]}", ["grid value 0.5 lies outside"]),
    ("Global.epochs: {type: int, low: 1.5, high: 5}", ["must be an integer"]),
])
def test_space_errors_are_one_line_with_the_fix(tmp_path, text, fragments):
    path = space_file(tmp_path, "# a comment\n" + text + "\n")
    with pytest.raises(ConfigError) as e:
        load_space(path, mlp_cfg())
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}:2"), msg
    for f in fragments:
        assert f in msg, msg


def test_space_parses_types_and_lists(tmp_path):
    path = space_file(tmp_path, "Optimizer.lr: {type: float, low: 1e-4, high: 1.0e-1, log: true}\n"
                                "Optimizer.name: {type: categorical, choices: [SGD, AdamW]}\n"
                                "Arch.hidden: {type: categorical, choices: [[64], [128, 64]]}\n"
                                "Global.epochs: {type: int, low: 1, high: 4}\n")
    space = load_space(path, mlp_cfg())
    assert list(space) == ["Optimizer.lr", "Optimizer.name", "Arch.hidden", "Global.epochs"]
    assert space["Optimizer.lr"].low == 1e-4 and space["Optimizer.lr"].log  # '1e-4' is a string to PyYAML
    # Optuna stores categorical values as scalars: lists travel as YAML text and come back as lists
    hidden = space["Arch.hidden"]
    assert hidden.encoded_choices() == ["[64]", "[128, 64]"] and hidden.decode("[128, 64]") == [128, 64]
    assert check_grid({k: v for k, v in space.items() if k != "Optimizer.lr"})["Global.epochs"] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"grid sampler needs a 'grid' list .* e\.g\. grid: \[0\.0001, "):
        check_grid(space)


def test_overrides_round_trip_through_load_config():
    params = {"Optimizer.lr": 1e-05, "Optimizer.name": "AdamW", "Arch.hidden": [128, 64], "Global.epochs": 3,
              "Optimizer.grad_clip": None, "Optimizer.nesterov": True}
    for text, (k, v) in zip(param_overrides(params), params.items()):
        parts, value = parse_override(text)
        assert ".".join(parts) == k and value == v and type(value) is type(v), text
    cfg = mlp_cfg(*param_overrides(params))
    assert cfg["Optimizer"]["lr"] == 1e-05 and cfg["Arch"]["hidden"] == [128, 64]


def test_edge_warnings():
    from utils.tune import ParamSpec

    space = {"lr": ParamSpec("lr", "float", 1e-4, 1e-1, log=True, grid=[1e-4, 1e-3, 1e-2]),
             "drop": ParamSpec("drop", "float", 0.0, 0.5),
             "depth": ParamSpec("depth", "int", 2, 6),
             "opt": ParamSpec("opt", "categorical", choices=["SGD", "Adam"])}
    # 1.3e-4 is 3.8% of the 3 decades above 1e-4 in log space
    w = edge_warnings(space, {"lr": 1.3e-4, "drop": 0.25, "depth": 4, "opt": "SGD"})
    assert len(w) == 1 and "lr = 0.00013 is at the low edge" in w[0]
    assert "log space" in w[0] and "low: 1.0e-05" in w[0]
    w = edge_warnings(space, {"lr": 2e-4, "drop": 0.49, "depth": 6})
    assert len(w) == 2 and "drop = 0.49 is at the high edge" in w[0] and "depth = 6 is at the high edge" in w[1]
    assert edge_warnings(space, {"lr": 3e-3, "drop": 0.26, "depth": 3}) == []
    # 5e-3 is 4.9% of the linear range but 57% of the log one: a log range is judged in log space
    assert edge_warnings(space, {"lr": 5e-3}) == []
    # grid sampler: the edges are the grid's ends
    w = edge_warnings(space, {"lr": 1e-2}, use_grid=True)
    assert len(w) == 1 and "highest value of its grid" in w[0]
    assert edge_warnings(space, {"lr": 1e-3}, use_grid=True) == []


# ----------------------------------------------------------------------------- storage

def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: a connection is refused at once
    return port


def test_postgres_url_goes_through_rdbstorage_with_a_timeout(monkeypatch):
    seen = {}

    class FakeRDB:
        def __init__(self, url, engine_kwargs=None):
            seen.update(url=url, kwargs=engine_kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", FakeRDB)
    url = "postgresql://tuner:pw@db.example:5432/studies"
    assert isinstance(open_storage(url), FakeRDB)
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; requirements.txt installs psycopg2
    assert seen["url"] in (url, url.replace("postgresql://", "postgresql+psycopg2://"))
    assert seen["kwargs"]["connect_args"]["connect_timeout"] > 0


def test_unreachable_database_fails_fast_one_line(tmp_path):
    path = space_file(tmp_path, "Optimizer.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}\n")
    url = f"postgresql://tuner:s3cret@127.0.0.1:{closed_port()}/studies"
    t = time.time()
    proc = run_tool("tools/tune.py", "-c", MLP, "--space", path, "--storage", url, "--trials", "1",
                    "-o", f"Global.output_dir={tmp_path}")
    assert time.time() - t < 10
    assert_user_error(proc, "cannot reach the study database", "Connection refused")
    assert "s3cret" not in proc.stderr
    assert not (tmp_path / "mlp_digits").exists()
    with pytest.raises(UserError, match="not a database URL"):
        open_storage("no such url")


def run_tool(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_tool_space_error_exit_2(tmp_path):
    path = space_file(tmp_path, "Optimizer.lrr: {type: float, low: 1.0e-4, high: 0.1}\n", "bad.yml")
    assert_user_error(run_tool("tools/tune.py", "-c", MLP, "--space", path), "bad.yml:1", "did you mean 'lr'")
    path = space_file(tmp_path, "Arch.dropout: {type: float, low: 0.0, high: 0.5}\n", "float.yml")
    assert_user_error(run_tool("tools/tune.py", "-c", MLP, "--space", path, "--sampler", "grid"),
                      "float.yml:1", "grid sampler needs a 'grid' list")


# ----------------------------------------------------------------------------- the trial callback

class FakeTrial:
    """Records reports; says prune from the ``prune_from``-th report on."""

    def __init__(self, prune_from=None):
        self.reports = []
        self.prune_from = prune_from

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return self.prune_from is not None and len(self.reports) >= self.prune_from


class FakeModel:
    stop_training = False


def test_reporter_reports_each_eval_and_prunes():
    trial, model = FakeTrial(prune_from=2), FakeModel()
    r = TrialReporter(trial, "loss")
    r.set_model(model)
    for _ in range(3):
        r.on_train_batch_end(0, {"loss": [0.7]})
    r.on_eval_end({"loss": 0.9, "acc": 0.5, "epoch": 1, "step": 3, "eval_time": 0.1})
    assert trial.reports == [(1, 0.9)] and not model.stop_training and r.pruned_at is None
    r.on_eval_end({"loss": 0.8, "acc": 0.6, "epoch": 2, "step": 6, "eval_time": 0.1})
    assert trial.reports == [(1, 0.9), (2, 0.8)]
    assert model.stop_training and model.num_iters == 1  # request_stop: hapi ends fit after this batch
    assert r.pruned_at == {"eval": 2, "step": 6, "epoch": 2, "value": 0.8} and r.steps == 3
    assert failure_reason({"best": {"loss": 0.8}, "stop_reason": None}, r) is None


def test_reporter_flags_non_finite_values_instead_of_reporting_them():
    trial, model = FakeTrial(prune_from=1), FakeModel()
    r = TrialReporter(trial, "acc")
    r.set_model(model)
    r.on_train_batch_end(0, {"loss": [float("nan")]})
    r.on_eval_end({"acc": float("nan"), "loss": float("nan"), "epoch": 1, "step": 1})
    assert trial.reports == [] and r.pruned_at is None and model.stop_training
    assert r.nonfinite == "training loss is nan at step 1"
    assert failure_reason({"best": None, "stop_reason": "training loss is nan at step 1 (epoch 1)"}, r).startswith(
        "training loss is nan")
    with pytest.raises(ConfigError, match="no validation metric 'acc_top9'"):
        TrialReporter(trial, "acc_top9").on_eval_end({"acc": 0.5, "loss": 1.0})


# ----------------------------------------------------------------------------- studies on digits

def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_study_writes_results_and_continues(tmp_path):
    space = space_file(tmp_path, "Optimizer.lr: {type: float, low: 3.0e-3, high: 3.0e-2, log: true}\n"
                                 "Arch.hidden: {type: categorical, choices: [[32], [64, 32]]}\n")
    over = [f"Global.output_dir={tmp_path}", "Global.epochs=2", *FAST]
    setup = prepare(MLP, space, over)
    out = run_study(setup, 3, print_fn=quiet)
    study_dir = tmp_path / "mlp_digits" / "tune_space"
    assert setup.study_dir == str(study_dir) and out["ran"] == 3
    rows = read_rows(study_dir / "trials.csv")
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3 and [r["steps"] for r in rows] == ["46"] * 3
    assert out["results"]["total_steps"] == 3 * 46
    best = out["study"].best_trial
    # every trial is an ordinary run: resolved config, metrics, VisualDL log with hparams
    run = study_dir / f"trial_{best.number}"
    assert rows[best.number]["run_dir"] == str(run)
    again = load_config(str(run / "config.yml"))
    assert again["Optimizer"]["lr"] == best.params["Optimizer.lr"] and again["Global"]["run_name"] == f"trial_{best.number}"
    from visualdl import LogReader
    log = [f for f in os.listdir(run) if f.startswith("vdlrecords.")]
    reader = LogReader(file_path=str(run / log[0]))
    assert len(log) == 1 and "hyper_parameters" in reader.get_tags()
    # the searched keys are in the HParams view under their config names (they are -o overrides)
    infos = reader.get_data("hyper_parameters", "hparam")[0].hparam.hparamInfos
    hp = {i.name: getattr(i, i.WhichOneof("type")) for i in infos}
    assert hp["Optimizer.lr"] == pytest.approx(best.params["Optimizer.lr"]) and "Global.run_name" not in hp
    # best_config.yml: loadable by tools/train.py -c, the best trial's values applied, no _base_/_meta
    best_cfg = load_config(str(study_dir / "best_config.yml"))
    assert best_cfg["Optimizer"]["lr"] == best.params["Optimizer.lr"]
    assert best_cfg["Arch"]["hidden"] == yaml.safe_load(best.params["Arch.hidden"])
    assert best_cfg["Global"]["run_name"] is None and best_cfg["Global"]["epochs"] == 2
    assert "_base_" not in (study_dir / "best_config.yml").read_text()
    md = (study_dir / "trials.md").read_text()
    assert "COMPLETE (best)" in md and f"acc {best.value:.4f}" in md and "visualdl --logdir" in md

    # the same command again continues the study (through the tool this time)
    proc = run_tool("tools/tune.py", "-c", MLP, "--space", space, "--trials", "1", *[a for o in over for a in ("-o", o)])
    assert proc.returncode == 0, proc.stderr
    assert "3 trials so far, running 1 more" in proc.stdout and "4 trials (4 COMPLETE)" in proc.stdout
    rows = read_rows(study_dir / "trials.csv")
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"] and (study_dir / "trial_3" / "metrics.json").exists()
    # the continued trial proposed new values (the sampler's seed moved on with the study)
    assert len({r["Optimizer.lr"] for r in rows}) == 4
    # a lost study.db does not silently start a second study over the first one's run directories
    os.remove(study_dir / "study.db")
    with pytest.raises(UserError, match="holds trial runs of a study"):
        run_study(prepare(MLP, space, over), 1, print_fn=quiet)


class PruneThese(optuna.pruners.BasePruner):
    """A scripted pruner: prunes the listed trial numbers at their first report."""

    def __init__(self, numbers):
        self.numbers = set(numbers)

    def prune(self, study, trial):
        return trial.number in self.numbers


def test_nan_trial_fails_pruned_trial_recorded_study_goes_on(tmp_path):
    space = space_file(tmp_path, "Optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e+4, log: true}\n", "nan.yml")
    over = [f"Global.output_dir={tmp_path}", "Global.epochs=2", "Optimizer.name=SGD", *FAST]
    setup = prepare(MLP, space, over, pruner=PruneThese([2]))
    # SGD at lr 1e4 overflows within a few steps; 0.05 and 0.02 train normally
    out = run_study(setup, 3, print_fn=quiet, enqueue=[{"Optimizer.lr": 1e4}, {"Optimizer.lr": 0.05},
                                                       {"Optimizer.lr": 0.02}])
    states = [t.state.name for t in out["study"].trials]
    assert states == ["FAIL", "COMPLETE", "PRUNED"]
    failed, _, pruned = out["study"].trials
    assert "nan" in failed.user_attrs["fail_reason"] and failed.user_attrs["steps"] < 23
    assert pruned.user_attrs["steps"] == 23 and pruned.user_attrs["fail_reason"].startswith("pruned at evaluation 1")
    rows = read_rows(os.path.join(setup.study_dir, "trials.csv"))
    assert [r["state"] for r in rows] == states and "nan" in rows[0]["reason"] and rows[2]["reason"]
    assert out["results"]["total_steps"] == failed.user_attrs["steps"] + 46 + 23
    assert load_config(out["results"]["best_config"])["Optimizer"]["lr"] == 0.05


def test_grid_runs_every_point_once(tmp_path):
    space = space_file(tmp_path, "Optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-2, grid: [1.0e-3, 1.0e-2]}\n"
                                 "Optimizer.name: {type: categorical, choices: [Adam]}\n", "grid.yml")
    setup = prepare(MLP, space, [f"Global.output_dir={tmp_path}", "Global.epochs=1", *FAST], sampler="grid",
                    pruner="none")
    out = run_study(setup, None, print_fn=quiet)
    assert sorted(t.params["Optimizer.lr"] for t in out["study"].trials) == [1e-3, 1e-2]
    lines = []
    assert run_study(setup, 5, print_fn=lines.append)["ran"] == 0
    assert any("grid complete" in l for l in lines)
