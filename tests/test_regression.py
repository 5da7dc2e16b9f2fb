"""Regression tasks: Global.task, mse/smooth_l1, the diabetes table, target normalization,
MAE/RMSE in target units, early stopping on them, the doctor's finding on raw targets, the eval and
visualize tools on a regression run."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from utils import doctor as D
from utils.build import build_network
from utils.config import load_config
from utils.data import TabularDataset, build_datasets
from utils.errors import ConfigError, UserError
from utils.trainer import train
from utils.training.evaluate import RegressionMetrics
from utils.training.losses import RegressionLoss, build_loss, regression_loss_np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "mlp_diabetes.yml")


def cfg_for(tmp_path, *overrides, config=CONFIG):
    return load_config(config, [f"Global.output_dir={tmp_path}", "Global.verbose=0", *overrides])


def quiet(*a, **k):
    pass


def one_line_error(exc_type, fn):
    with pytest.raises(exc_type) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- config


def test_task_defaults_and_explicit_values_win():
    cfg = load_config(CONFIG, [])
    assert cfg["Global"]["task"] == "regression" and cfg["Loss"]["name"] == "mse"
    assert (cfg["EarlyStopping"]["monitor"], cfg["EarlyStopping"]["mode"]) == ("mae", "min")
    # nothing said about loss / monitor / mode: the regression defaults
    base = {"Global": {"task": "regression"}, "Data": {"name": "diabetes"}}
    from utils.config import validate

    cfg = validate(base)
    assert cfg["Loss"]["name"] == "mse"
    assert (cfg["EarlyStopping"]["monitor"], cfg["EarlyStopping"]["mode"]) == ("mae", "min")
    # explicit values win
    cfg = validate({**base, "Loss": {"name": "smooth_l1"}, "EarlyStopping": {"monitor": "rmse", "mode": "max"}})
    assert cfg["Loss"]["name"] == "smooth_l1"
    assert (cfg["EarlyStopping"]["monitor"], cfg["EarlyStopping"]["mode"]) == ("rmse", "max")
    # classification defaults untouched
    cfg = validate({})
    assert cfg["Global"]["task"] == "classification" and cfg["Loss"]["name"] == "CrossEntropy"
    assert (cfg["EarlyStopping"]["monitor"], cfg["EarlyStopping"]["mode"]) == ("acc", "max")


@pytest.mark.parametrize("overrides, keys", [
    (["Loss.name=CrossEntropy"], ("Loss.name", "Global.task")),
    (["Global.task=classification"], ("Data.name", "Global.task")),
    (["Global.task=classification", "Data.name=digits", "Loss.name=mse"], ("Loss.name", "Global.task")),
    (["Data.name=digits"], ("Data.name", "Global.task")),
    (["EarlyStopping.monitor=acc"], ("EarlyStopping.monitor", "Global.task")),
    (["Global.task=classification", "Data.name=digits", "Loss.name=CrossEntropy", "EarlyStopping.monitor=mae"],
     ("EarlyStopping.monitor", "Global.task")),
    (["LRScheduler.monitor=acc"], ("LRScheduler.monitor", "Global.task")),
    (["Loss.label_smoothing=0.1"], ("Loss.label_smoothing", "Global.task")),
])
def test_task_mismatch_is_a_one_line_error_naming_both_keys(overrides, keys):
    msg = one_line_error(ConfigError, lambda: load_config(CONFIG, overrides))
    for k in keys:
        assert k in msg, msg


# ----------------------------------------------------------------------------- data


def test_diabetes_shapes_split_and_normalization_stats(tmp_path):
    from sklearn.datasets import load_diabetes

    cfg = cfg_for(tmp_path)
    b = build_datasets(cfg)
    assert b.task == "regression" and b.num_features == 10 and b.in_channels == 10 and b.image_size == 1
    assert b.num_classes == 1 and b.test is None
    assert isinstance(b.train, TabularDataset) and len(b.train) + len(b.val) == 442 and len(b.val) == 89
    x, y = b.train[0]
    assert x.shape == (10, 1, 1) and x.dtype == np.float32 and y.shape == (1,) and y.dtype == np.float32
    # a seeded random split: disjoint, reproducible, another seed gives another split
    raw = load_diabetes(scaled=False)
    assert sorted(np.concatenate([b.train.targets, b.val.targets])) == pytest.approx(sorted(raw.target))
    again = build_datasets(cfg_for(tmp_path))
    assert np.array_equal(again.val.targets, b.val.targets)
    other = build_datasets(cfg_for(tmp_path, "Data.split_seed=1"))
    assert not np.array_equal(other.val.targets, b.val.targets)
    # target statistics from the train split only; the normalized train targets are ~N(0, 1)
    assert b.target_mean == pytest.approx(b.train.targets.mean(), abs=1e-5)
    assert b.target_std == pytest.approx(b.train.targets.std(), abs=1e-5)
    assert 20 < b.target_std < 120 and 100 < b.target_mean < 200
    ys = np.array([b.train[i][1][0] for i in range(len(b.train))])
    xs = np.stack([b.train[i][0].reshape(-1) for i in range(len(b.train))])
    assert abs(ys.mean()) < 1e-4 and ys.std() == pytest.approx(1.0, abs=1e-4)
    assert np.abs(xs.mean(0)).max() < 1e-4 and xs.std(0) == pytest.approx(np.ones(10), abs=1e-4)
    assert len(b.mean) == 10 and b.mean == pytest.approx(list(b.train.features.mean(0)), abs=1e-5)
    # val uses train's statistics, not its own
    yv = np.array([b.val[i][1][0] for i in range(len(b.val))])
    assert yv == pytest.approx((b.val.targets - b.target_mean) / b.target_std, abs=1e-5)
    # without target normalization the targets come through in their own units
    rawb = build_datasets(cfg_for(tmp_path, "Data.normalize_target=false"))
    assert rawb.target_mean is None and rawb.train[0][1][0] == pytest.approx(rawb.train.targets[0])


def test_tabular_data_errors(tmp_path):
    msg = one_line_error(ConfigError, lambda: build_datasets(cfg_for(
        tmp_path, "Transforms.train=[{RandomCrop: {size: 8}}]")))
    assert "RandomCrop" in msg and "diabetes" in msg
    msg = one_line_error(UserError, lambda: build_network(cfg_for(tmp_path, "Arch.name=cnn"),
                                                          build_datasets(cfg_for(tmp_path))))
    assert "Arch.name" in msg and "mlp" in msg


# ----------------------------------------------------------------------------- metrics and loss


def test_metrics_are_in_target_units():
    m = RegressionMetrics("mse", target_mean=100.0, target_std=10.0)
    preds = np.array([[0.0], [1.0], [-1.0], [0.5]])        # normalized: 100, 110, 90, 105
    targets = np.array([[0.0], [0.0], [0.0], [0.0]], np.float32)  # all 100
    r = m(preds, targets)
    assert r["mae"] == pytest.approx((0 + 10 + 10 + 5) / 4)
    assert r["rmse"] == pytest.approx(math.sqrt((0 + 100 + 100 + 25) / 4))
    assert r["loss"] == pytest.approx((0 + 1 + 1 + 0.25) / 4)   # the training loss, normalized units
    assert r["samples"] == 4
    # not normalized: the same numbers are already target units
    r = RegressionMetrics("mse")(np.array([3.0, 5.0]), np.array([1.0, 1.0]))
    assert (r["mae"], r["rmse"], r["loss"]) == pytest.approx((3.0, math.sqrt(10.0), 10.0))


@pytest.mark.parametrize("name", ["mse", "smooth_l1"])
def test_regression_loss_layer_matches_numpy_and_does_not_broadcast(name):
    rng = np.random.RandomState(0)
    pred = rng.randn(16, 1).astype(np.float32) * 2
    target = rng.randn(16).astype(np.float32)  # [N] against [N, 1]: no [N, N] broadcast
    got = float(RegressionLoss(name)(paddle.to_tensor(pred), paddle.to_tensor(target)))
    assert got == pytest.approx(regression_loss_np(pred, target, name).mean(), rel=1e-5)
    if name == "smooth_l1":
        ref = paddle.nn.functional.smooth_l1_loss(paddle.to_tensor(pred.reshape(-1)), paddle.to_tensor(target))
        assert got == pytest.approx(float(ref), rel=1e-5)
    cfg = load_config(CONFIG, [f"Loss.name={name}"])
    assert isinstance(build_loss(cfg, 1), RegressionLoss)


def test_rule_target_scale():
    ctx = D.RunContext(num_classes=1, task="regression", target_normalized=False, target_mean=152.0,
                       target_std=77.0, steps_per_epoch=6)
    loss = [(1, 2.9e4), (2, 2.8e4)]
    found = D.rule_target_scale(loss, ctx)
    assert [f.id for f in found] == ["targets_not_normalized"] and found[0].step == 1
    for lang in D.LANGS:
        assert "normalize_target" in found[0].remedy(lang) and found[0].message(lang)
    assert D.rule_target_scale(loss, D.RunContext(**{**ctx.to_dict(), "target_normalized": True})) == []
    assert D.rule_target_scale(loss, D.RunContext(**{**ctx.to_dict(), "target_mean": 0.5, "target_std": 2.0})) == []
    assert D.rule_target_scale(loss, D.RunContext(num_classes=10)) == []


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("regression")
    norm = train(cfg_for(out, "Global.run_name=norm"), print_fn=quiet)
    raw = train(cfg_for(out, "Global.run_name=raw", "Data.normalize_target=false", "Global.epochs=10"),
                print_fn=quiet)
    return {"out": out, "norm": norm, "raw": raw}


def _diagnosis(run_dir):
    with open(os.path.join(run_dir, "diagnosis.json"), encoding="utf-8") as f:
        return json.load(f)


def test_normalized_run_converges_in_target_units(runs):
    m = runs["norm"]
    b = build_datasets(load_config(CONFIG, []))
    # predicting the training mean: the floor any model must beat (~64 MAE on this split)
    base_mae = float(np.abs(b.val.targets - b.train.targets.mean()).mean())
    assert base_mae > 55
    best = m["best"]
    assert best["mae"] < 48 and best["rmse"] < 62, best  # measured 44.3 / 57.0; target std ~77
    assert best["mae"] < 0.8 * base_mae
    hist = m["history"]
    assert all({"loss", "mae", "rmse"} <= set(h) and "acc" not in h for h in hist)
    assert hist[0]["mae"] > best["mae"]
    cfg = load_config(os.path.join(m["run_dir"], "config.yml"))
    assert cfg["Data"]["target_mean"] == pytest.approx(b.target_mean) and cfg["Data"]["target_std"] > 0
    assert len(cfg["Transforms"]["mean"]) == 10
    ids = [f["id"] for f in _diagnosis(m["run_dir"])["findings"]]
    assert "targets_not_normalized" not in ids
    assert not [f for f in _diagnosis(m["run_dir"])["findings"] if f["severity"] == "error"]

    from visualdl import LogReader

    log = [f for f in os.listdir(m["run_dir"]) if f.startswith("vdlrecords.")][0]
    tags = LogReader(file_path=os.path.join(m["run_dir"], log)).get_tags()
    assert {"eval/mae", "eval/rmse", "eval/loss", "train/loss"} <= set(tags["scalar"])
    assert "train/acc" not in tags["scalar"] and not tags.get("image") and not tags.get("pr_curve")
    assert not any(t.startswith("eval/confidence") for t in tags.get("histogram", []))


def test_early_stopping_on_mae_mode_min(runs):
    m = runs["norm"]  # mlp_diabetes.yml: monitor mae, mode min, patience 10
    hist = m["history"]
    assert m["stopped_early"] and "mae did not improve" in m["stop_reason"], m["stop_reason"]
    maes = [h["mae"] for h in hist]
    i = int(np.argmin(maes))
    assert m["best"]["mae"] == pytest.approx(maes[i]) and m["best"]["epoch"] == hist[i]["epoch"]
    assert len(hist) - 1 - i == 10  # stopped after exactly `patience` evaluations without a lower MAE
    assert m["restored_best_weights"]


def test_without_target_normalization_the_doctor_flags_it(runs):
    m = runs["raw"]
    diag = _diagnosis(m["run_dir"])
    found = {f["id"]: f for f in diag["findings"]}
    assert "targets_not_normalized" in found, list(found)
    f = found["targets_not_normalized"]
    assert f["step"] == 1 and f["evidence"]["loss"] > 1e4  # ~2.9e4 = mean(target^2)
    assert f["evidence"]["loss"] == pytest.approx(f["evidence"]["target_ms"], rel=0.3)
    # Adam at the config's LR: the output has to crawl to ~150, the MAE stays far above the normalized run's
    assert m["best"]["mae"] > 2 * runs["norm"]["best"]["mae"], m["best"]
    # offline diagnosis of the run directory finds it too
    assert "targets_not_normalized" in [x.id for x in D.diagnose(*D.load_run(m["run_dir"])[:2])]


def test_without_target_normalization_sgd_explodes_and_stops(tmp_path):
    m = train(cfg_for(tmp_path, "Data.normalize_target=false", "Optimizer.name=Momentum", "Optimizer.lr=0.01",
                      "Global.epochs=3"), print_fn=quiet)
    assert m["stopped_early"] and m["epochs_run"] < 3 and "training loss is" in m["stop_reason"], m["stop_reason"]
    ids = [f["id"] for f in _diagnosis(m["run_dir"])["findings"]]
    assert "nan_loss" in ids and "targets_not_normalized" in ids, ids
    # the same optimizer with normalized targets trains
    ok = train(cfg_for(tmp_path, "Optimizer.name=Momentum", "Optimizer.lr=0.01", "Global.epochs=3",
                       "Global.run_name=ok"), print_fn=quiet)
    assert not ok["stopped_early"] and math.isfinite(ok["final"]["mae"]) and ok["final"]["mae"] < 70


# ----------------------------------------------------------------------------- tools


def _tool(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)


def test_eval_tool_reports_mae_rmse(runs):
    run = runs["norm"]["run_dir"]
    r = _tool("tools/eval.py", run)
    assert r.returncode == 0, r.stderr
    assert "mae" in r.stdout and "rmse" in r.stdout and "confusion" not in r.stdout and "acc" not in r.stdout
    report = json.load(open(os.path.join(run, "eval_val.json")))
    assert report["task"] == "regression" and report["samples"] == 89
    assert report["mae"] == pytest.approx(runs["norm"]["best"]["mae"], rel=1e-4)
    assert report["rmse"] == pytest.approx(runs["norm"]["best"]["rmse"], rel=1e-4)
    assert f"{report['mae']:.4f}" in r.stdout


def test_visualize_classification_commands_refuse_a_regression_run(runs):
    run = runs["norm"]["run_dir"]
    r = _tool("tools/visualize.py", "confusion", run)
    assert r.returncode != 0 and "regression run" in r.stderr and "curves" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    from utils.visual import plot_curves

    res = plot_curves([run], os.path.join(str(runs["out"]), "curves.png"))
    assert res.panels == 3 and os.path.isfile(res.path)
