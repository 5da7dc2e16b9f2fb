"""The training doctor: every rule on scripted sequences, the live callback, the broken-run suite
on small fast runs, offline diagnosis of a run directory and its tool."""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest
from paddle import nn

import utils.data
import utils.trainer
from utils import doctor as D
from utils.config import load_config
from utils.doctor import Finding, RunContext, RunSeries, diagnose
from utils.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ctx(**kw):
    base = dict(num_classes=10, majority_rate=0.1, n_val=360, steps_per_epoch=20, total_steps=200)
    base.update(kw)
    return RunContext(**base)


def ids(findings, severities=D.SEVERITIES):
    """Finding ids; every finding must also render in both languages."""
    for f in findings:
        for lang in D.LANGS:
            assert f.message(lang) and f.remedy(lang) and f.text(lang)
    return [f.id for f in findings if f.severity in severities]


def evals_from(train_losses, val_losses, accs=None, every=20):
    accs = accs or [0.5 + 0.4 * i / max(len(val_losses) - 1, 1) for i in range(len(val_losses))]
    return [{"step": every * (i + 1), "epoch": i + 1, "loss": v, "acc": a, "train_loss": t}
            for i, (t, v, a) in enumerate(zip(train_losses, val_losses, accs))]


def healthy_series(steps=200, seed=0):
    rng = np.random.RandomState(seed)
    level = lambda s: 2.2 * math.exp(-s / 60) + 0.1  # noqa: E731
    train_loss = [(s, level(s) * (1 + 0.1 * rng.randn())) for s in range(1, steps + 1)]
    evals = [{"step": s, "epoch": s // 20, "loss": level(s) + 0.05, "acc": 0.95 - 0.8 * math.exp(-s / 60)}
             for s in range(20, steps + 1, 20)]
    return RunSeries(
        train_loss=train_loss, evals=evals,
        grad_norm=[(s, 1.0 + 0.2 * rng.rand()) for s in range(10, steps + 1, 10)],
        confidence=[(s, 0.95 - 0.8 * math.exp(-s / 60)) for s in (1, 50, 100, 150, 200)],
        batch_purity=[(s, 0.2 + 0.05 * rng.rand(), 64) for s in range(10, steps + 1, 10)],
        clip={"samples": 20, "clipped": 2},
        layers=[{"name": "body.0", "type": "Linear", "rms": 0.9, "absmax": 4.0, "dead": None},
                {"name": "body.1", "type": "ReLU", "rms": 0.6, "absmax": 4.0, "dead": 0.1},
                {"name": "head", "type": "Linear", "rms": 2.0, "absmax": 9.0, "dead": None}],
        layers_step=200, input_rms=1.0,
        grads=[{"name": "body.0.weight", "rms": 0.01, "ndim": 2}, {"name": "body.0.bias", "rms": 0.02, "ndim": 1},
               {"name": "head.weight", "rms": 0.03, "ndim": 2}, {"name": "head.bias", "rms": 0.05, "ndim": 1}],
        grads_step=200)


# ----------------------------------------------------------------------------- findings and messages

def test_every_finding_id_has_both_languages_with_the_same_fields():
    assert set(D.LANGS) == {"en", "zh"}
    for fid, langs in D.MESSAGES.items():
        assert set(langs) == set(D.LANGS), fid
        en_fields = D.message_fields(langs["en"][0] + langs["en"][1])
        for lang in D.LANGS:
            message, remedy = langs[lang]
            assert message.strip() and remedy.strip(), (fid, lang)
            assert D.message_fields(message + remedy) == en_fields, (fid, lang)
        f = Finding(fid, "warn", {k: 1.0 for k in en_fields if k not in ("step", "epoch")}, step=3, epoch=1)
        assert "第 1 轮第 3 步" in f.text("zh") and "step 3, epoch 1" in f.text("en")
        assert f.message("zh") != f.message("en")


def test_finding_validates_and_round_trips():
    with pytest.raises(ValueError):
        Finding("no_such_finding", "warn")
    with pytest.raises(ValueError):
        Finding("plateau", "fatal")
    f = Finding("nan_loss", "error", {"loss": "nan", "extra": np.float32(2.5)}, step=7, epoch=1)
    d = f.to_dict("zh")
    assert d["evidence"]["extra"] == 2.5 and isinstance(d["evidence"]["extra"], float)
    assert "第 7 步" in d["message"]
    assert Finding.from_dict(json.loads(json.dumps(d))) == f
    report = D.format_report([Finding("still_learning", "info", {"train_change": -0.1, "val_change": -0.2,
                                                                  "evals": 3}, 60, 3), f], "en")
    assert report.splitlines()[0].startswith("doctor: 2 finding(s): 1 error")
    assert report.index("nan_loss") < report.index("still_learning")  # most severe first
    assert D.format_report([], "zh") == D.UI["zh"]["none"]


# ----------------------------------------------------------------------------- rules on scripted sequences

def test_healthy_sequence_gets_no_warning():
    found = diagnose(healthy_series(), ctx())
    assert ids(found, ("error", "warn")) == []
    assert "still_learning" in ids(found)


def test_nonfinite_loss():
    c = ctx()
    f = D.rule_nonfinite_loss([(1, 2.3), (2, 2.2), (3, float("nan")), (4, float("inf"))], c)
    assert ids(f) == ["nan_loss"] and f[0].step == 3 and f[0].epoch == 1 and f[0].severity == "error"
    assert D.rule_nonfinite_loss([(1, 2.3), (2, 0.1)], c) == []
    src = D.rule_nonfinite_source({"kind": "layer", "step": 30, "layer": "body.3", "type": "Linear",
                                   "input_absmax": 1e3, "weight_absmax": 1e20}, c)
    assert ids(src) == ["nan_layer"] and src[0].epoch == 2 and "body.3" in src[0].message()


def test_divergence():
    c = ctx()
    falling = [(s, 2.3 - 1.3 * s / 50) for s in range(1, 51)]
    rising = [(s, 1.0 * 1.15 ** (s - 50)) for s in range(51, 80)]
    f = D.rule_divergence(falling + rising, c)
    assert ids(f) == ["divergence"] and f[0].evidence["ratio"] > D.DIVERGE_FACTOR and f[0].evidence["best_step"] < 60
    assert D.rule_divergence(falling, c) == []
    # near zero, 0.01 -> 0.05 is 5x but no divergence
    low = [(s, 2.3 * math.exp(-s / 5)) for s in range(1, 60)] + [(s, 0.05) for s in range(60, 90)]
    assert D.rule_divergence(low, c) == []
    # stops looking at the first NaN
    assert D.rule_divergence([(1, 2.3), (2, float("nan")), (3, 1e9)], c) == []


def test_oscillation():
    c = ctx()
    jumpy = [(s, 2.3 - 0.3 * s / 100 + (1.2 if s % 2 else -1.2) * 0.8) for s in range(1, 121)]
    f = D.rule_oscillation(jumpy, c)
    assert ids(f) == ["oscillation"] and f[0].evidence["ratio"] > D.OSC_RATIO
    assert D.rule_oscillation(healthy_series().train_loss, c) == []
    # large relative noise at a loss near zero is not oscillation
    rng = np.random.RandomState(1)
    tiny = [(s, 2.3 * math.exp(-s / 5) + 0.02 * rng.rand()) for s in range(1, 121)]
    assert D.rule_oscillation(tiny, c) == []
    assert D.rule_oscillation(jumpy[:10], c) == []  # too short to tell


def test_plateau():
    c = ctx()
    flat = evals_from([1.0] * 9, [1.0, 0.8, 0.7] + [0.7] * 6, [0.5, 0.6, 0.7] + [0.7] * 6)
    f = D.rule_plateau(flat, c)
    assert ids(f) == ["plateau"] and f[0].evidence["evals"] == 6 and f[0].evidence["best_step"] == 60
    # an accuracy that still improves is no plateau
    acc_up = evals_from([1.0] * 9, [1.0, 0.8, 0.7] + [0.7] * 6, [0.5 + 0.01 * i for i in range(9)])
    assert D.rule_plateau(acc_up, c) == []
    assert D.rule_plateau(flat[:5], c) == []
    assert "best acc 0.7" in f[0].message("en") and "最佳 acc 0.7" in f[0].message("zh")


def test_plateau_on_a_regression_run_watches_mae():
    c = ctx(task="regression")
    evals = [{"step": 20 * (i + 1), "epoch": i + 1, "loss": 0.5, "mae": m, "train_loss": 0.5}
             for i, m in enumerate([60.0, 50.0, 45.0] + [45.0] * 6)]
    f = D.rule_plateau(evals, c)
    assert ids(f) == ["plateau"] and f[0].evidence["metric"] == "mae" and f[0].evidence["best_metric"] == 45.0
    assert "best mae 45" in f[0].message("en") and "acc" not in f[0].message("en")
    # a falling MAE is progress even while the loss stays flat
    falling = [dict(e, mae=60.0 - i) for i, e in enumerate(evals)]
    assert D.rule_plateau(falling, c) == []


def test_accuracy_stuck_and_at_chance():
    c = ctx()
    stuck = evals_from([2.3] * 4, [2.3] * 4, [0.12, 0.1, 0.1, 0.1])
    f = D.rule_accuracy(stuck, c)
    assert ids(f) == ["acc_stuck"] and f[0].evidence["majority_rate"] == 0.1
    chance = evals_from([2.3] * 4, [2.3] * 4, [0.08, 0.11, 0.09, 0.12])
    assert ids(D.rule_accuracy(chance, c)) == ["acc_chance"]
    # the same good accuracy three times is a plateau at most, not a stuck network
    assert D.rule_accuracy(evals_from([0.1] * 3, [0.1] * 3, [0.97] * 3), c) == []
    assert D.rule_accuracy(evals_from([0.5] * 3, [0.5] * 3, [0.6, 0.7, 0.8]), c) == []
    # the band follows the val set size: 2 binomial standard errors
    assert ids(D.rule_accuracy(evals_from([1] * 3, [1] * 3, [0.2] * 3), ctx(n_val=30))) == ["acc_stuck"]
    assert D.rule_accuracy(evals_from([1] * 3, [1] * 3, [0.2] * 3), ctx(n_val=3000)) == []


@pytest.mark.parametrize("train_l, val_l, expected, severity", [
    ([2.0, 1.6, 1.3, 1.1, 1.0], [2.0, 1.7, 1.4, 1.2, 1.1], "still_learning", "info"),
    ([1.0, 0.6, 0.4, 0.25, 0.15], [0.8, 0.7, 0.75, 0.85, 0.95], "overfitting", "warn"),
    ([1.0, 0.7, 0.5, 0.35, 0.25], [0.80, 0.79, 0.80, 0.79, 0.80], "overfitting", "info"),
    ([1.5, 1.5, 1.51, 1.5, 1.5], [1.9, 1.75, 1.6, 1.5, 1.45], "data_problem", "warn"),
    ([2.2, 2.2, 2.21, 2.2, 2.2], [2.1, 2.1, 2.1, 2.11, 2.1], "bottleneck", "warn"),
    ([0.05, 0.05, 0.049, 0.05, 0.05], [0.1, 0.1, 0.1, 0.1, 0.1], "converged", "info"),
    ([1.0, 1.2, 1.5, 1.8, 2.2], [1.0, 1.3, 1.6, 1.9, 2.3], "both_rising", "error"),
])
def test_train_val_loss_patterns(train_l, val_l, expected, severity):
    f = D.rule_loss_patterns(evals_from(train_l, val_l), ctx())
    assert ids(f) == [expected] and f[0].severity == severity


def test_overfitting_near_zero_train_loss():
    # train loss ~0.001 wobbling is flat, not rising: val rising from its best is overfitting
    f = D.rule_loss_patterns(evals_from([0.002, 0.001, 0.002, 0.001, 0.001], [0.7, 0.8, 0.9, 1.0, 1.1]), ctx())
    assert ids(f) == ["overfitting"] and f[0].severity == "warn"


def test_train_above_val_and_dropout_too_strong():
    flat_above = evals_from([0.6] * 5, [0.4] * 5)
    f = D.rule_loss_patterns(flat_above, ctx())
    assert "train_above_val" in ids(f, ("warn",))  # no dropout, no augmentation, not falling
    f = D.rule_loss_patterns(flat_above, ctx(dropout=0.3))
    assert "train_above_val" in ids(f, ("info",)) and "dropout" in f[-1].remedy()
    f = D.rule_loss_patterns(flat_above, ctx(augmentation=True))
    assert "train_above_val" in ids(f, ("info",))
    poor = evals_from([4.0, 3.5, 3.2, 3.0, 2.9], [2.2, 2.2, 2.2, 2.2, 2.2])
    assert "dropout_too_strong" in ids(D.rule_loss_patterns(poor, ctx(dropout=0.95)), ("warn",))
    assert "dropout_too_strong" not in ids(D.rule_loss_patterns(poor, ctx(dropout=0.1)))
    assert D.rule_loss_patterns(flat_above[:2], ctx()) == []  # too few evaluations


def test_uniform_confidence_late():
    c = ctx()
    f = D.rule_confidence([(1, 0.11), (100, 0.12), (160, 0.13), (200, 0.12)], c)
    assert ids(f) == ["uniform_confidence"] and f[0].evidence["from_step"] == 160
    assert D.rule_confidence([(1, 0.11), (100, 0.5), (200, 0.85)], c) == []
    assert D.rule_confidence([(1, 0.11)], c) == []  # early: not late in training
    assert D.rule_confidence([(1, 0.6), (200, 0.6)], ctx(num_classes=2)) == []


def test_gradient_norm_and_clipping():
    c = ctx(grad_clip="global_norm", clip_value=1.0)
    norms = [(s, 1.0) for s in range(10, 200, 10)]
    f = D.rule_gradients(norms[:5] + [(60, 5e3)] + norms[6:], {"samples": 20, "clipped": 3}, c)
    assert ids(f) == ["exploding_gradients"] and f[0].step == 60
    assert ids(D.rule_gradients(norms[:3] + [(40, float("nan"))], {}, c)) == ["exploding_gradients"]
    f = D.rule_gradients(norms, {"samples": 20, "clipped": 15}, c)
    assert ids(f) == ["clipped_often"] and f[0].evidence["fraction"] == 0.75
    assert D.rule_gradients(norms, {"samples": 20, "clipped": 10}, c) == []      # half: not above
    assert D.rule_gradients(norms, {"samples": 3, "clipped": 3}, c) == []        # too few samples
    assert D.rule_gradients(norms, {"samples": 20, "clipped": 15}, ctx()) == []  # clipping off


def test_layer_gradients_and_activations():
    c = ctx()
    grads = [{"name": "body.0.weight", "rms": 1e-21, "ndim": 2}, {"name": "body.3.weight", "rms": 2e-21, "ndim": 2},
             {"name": "head.weight", "rms": 1e-20, "ndim": 2}, {"name": "head.bias", "rms": 0.05, "ndim": 1}]
    f = D.rule_layer_gradients(grads, 50, c)
    assert ids(f) == ["vanishing_gradients"] and f[0].evidence["count"] == 3 and f[0].evidence["max_param"] == "head.bias"
    assert D.rule_layer_gradients(healthy_series().grads, 50, c) == []
    layers = [{"name": "body.0", "type": "Linear", "rms": 8e-4, "absmax": 1e-2, "dead": None},
              {"name": "body.1", "type": "Tanh", "rms": 8e-4, "absmax": 1e-2, "dead": None},
              {"name": "body.3", "type": "Linear", "rms": 6e-7, "absmax": 1e-5, "dead": None}]
    f = D.rule_activations(layers, 1.0, 50, c)
    assert ids(f) == ["vanishing_activations"] and f[0].evidence["first"] == "body.0" and f[0].evidence["count"] == 3
    assert f[0].evidence["layers"].startswith("body.3")  # the deepest (smallest) first
    big = [{"name": "fc", "type": "Linear", "rms": 3e4, "absmax": 1e5, "dead": None}]
    assert ids(D.rule_activations(big, 1.0, 50, c)) == ["exploding_activations"]
    dead = [{"name": "act1", "type": "ReLU", "rms": 0.1, "absmax": 1.0, "dead": 0.9},
            {"name": "act2", "type": "ReLU", "rms": 0.5, "absmax": 1.0, "dead": 0.2}]
    f = D.rule_activations(dead, 1.0, 50, c)
    assert ids(f) == ["dead_relu"] and f[0].evidence["count"] == 1 and "act1 90%" in f[0].evidence["layers"]
    h = healthy_series()
    assert D.rule_activations(h.layers, h.input_rms, 200, c) == []


def test_unshuffled_batches_explain_loss_jumps():
    c = ctx(num_classes=4, majority_rate=0.25)
    sorted_batches = [(s, 1.0, 64) for s in range(10, 200, 10)]
    f = D.rule_batch_purity(sorted_batches, c)
    assert ids(f) == ["unshuffled_batches"] and f[0].evidence["purity"] == 1.0
    assert D.rule_batch_purity([(s, 0.35, 64) for s in range(10, 200, 10)], c) == []   # shuffled
    assert D.rule_batch_purity([(s, 1.0, 2) for s in range(10, 200, 10)], c) == []     # tiny batches
    assert D.rule_batch_purity(sorted_batches[:3], c) == []                             # too few samples
    # a sawtooth training loss (low inside a class block, a spike at each class change)
    saw = [(1, 1.4)] + [(s, 5.0 if s % 20 == 1 else 0.01) for s in range(2, 201)]
    series = RunSeries(train_loss=saw, batch_purity=sorted_batches)
    assert "divergence" in ids(diagnose(RunSeries(train_loss=saw), c))
    found = ids(diagnose(series, c))
    assert "unshuffled_batches" in found and "divergence" not in found and "oscillation" not in found


# ----------------------------------------------------------------------------- live pieces without training

class _FakeDoctor:
    sample_layers_now = True
    measure_grads = True
    nonfinite_pending = False

    def __init__(self):
        self.recorded = []

    def record_grads(self, total, clipped, per_param):
        self.recorded.append((total, clipped, per_param))


def _grads_after(clip, seed=0):
    paddle.seed(seed)
    net = nn.Linear(6, 3)
    opt = paddle.optimizer.SGD(0.1, parameters=net.parameters(), grad_clip=clip)
    x = paddle.to_tensor(np.random.RandomState(seed).randn(8, 6).astype("float32"))
    loss = (net(x) ** 2).mean()
    loss.backward()
    grads = [p.grad.numpy().copy() for p in net.parameters()]
    opt.step()
    return net, grads, [p.numpy() for p in net.parameters()]


def test_grad_monitor_passes_through_and_measures():
    doc = _FakeDoctor()
    inner = nn.ClipGradByGlobalNorm(clip_norm=1e-3)
    # the same update as the plain clip, and the recorded norm is the true global norm
    _, grads, ref = _grads_after(nn.ClipGradByGlobalNorm(clip_norm=1e-3))
    _, _, got = _grads_after(D.GradMonitor(inner, doc))
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    total, clipped, per_param = doc.recorded[-1]
    assert total == pytest.approx(math.sqrt(sum(float((g ** 2).sum()) for g in grads)), rel=1e-5)
    assert clipped is True and len(per_param) == 2
    # no clip configured: a pure pass-through that still measures
    doc2 = _FakeDoctor()
    _, _, plain = _grads_after(None)
    _, _, got = _grads_after(D.GradMonitor(None, doc2))
    for a, b in zip(plain, got):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert doc2.recorded[-1][1] is None
    # value clipping: clipped when any |g| exceeds the bound
    doc3 = _FakeDoctor()
    _grads_after(D.GradMonitor(nn.ClipGradByValue(max=1e-6), doc3))
    assert doc3.recorded[-1][1] is True


class _LogOfZero(nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(paddle.log(x - x))


@pytest.mark.filterwarnings("ignore:When training, we now always track")
def test_locate_nonfinite():
    paddle.seed(0)
    x = paddle.ones([3, 4])
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert D.locate_nonfinite(net, (x,), float("nan"))["kind"] == "loss"
    bad_x = paddle.to_tensor(np.array([[1, np.nan, 1, 1]] * 3, np.float32))
    where = D.locate_nonfinite(net, (bad_x,))
    assert where["kind"] == "input" and where["count"] == 3
    net[2].weight.set_value(paddle.full([4, 2], 1e38))
    where = D.locate_nonfinite(net, (x * 10,))
    assert where["kind"] == "layer" and where["layer"] == "2" and where["type"] == "Linear"
    assert where["weight_absmax"] == pytest.approx(1e38, rel=1e-6)
    net[0].bias.set_value(paddle.to_tensor([np.nan, 0, 0, 0], dtype="float32"))
    assert D.locate_nonfinite(net, (x,)) == {"kind": "weights", "param": "0.bias"}
    where = D.locate_nonfinite(_LogOfZero(), (x,))
    assert where["kind"] == "op" and where["layer"] == "fc"
    # the replay leaves BatchNorm's running statistics alone
    bn_net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1D(4))
    before = [b.numpy().copy() for b in bn_net.buffers()]
    D.locate_nonfinite(bn_net, (paddle.randn([8, 4]),))
    for a, b in zip(before, bn_net.buffers()):
        np.testing.assert_array_equal(a, b.numpy())


# ----------------------------------------------------------------------------- broken-run suite

def quiet(*a, **k):
    pass


def run(tmp, name, *overrides, config="configs/mlp_digits.yml", print_fn=quiet):
    cfg = load_config(os.path.join(ROOT, config), [f"Global.output_dir={tmp}", f"Global.run_name={name}",
                                                   "Global.verbose=0", *overrides])
    m = train(cfg, print_fn=print_fn)
    with open(os.path.join(m["run_dir"], "diagnosis.json"), encoding="utf-8") as f:
        diag = json.load(f)
    return m, diag


def found(diag, severities=("error", "warn")):
    return {f["id"] for f in diag["findings"] if f["severity"] in severities}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("doctor_runs")


def test_lr_far_too_high_diverges(out):
    _, diag = run(out, "lr_high", "Optimizer.lr=5.0", "Global.epochs=3")
    assert "divergence" in found(diag)


def test_lr_overflow_stops_at_once_names_the_layer_and_keeps_good_weights(out):
    lines = []
    m, diag = run(out, "lr_nan", "Optimizer.name=SGD", "Optimizer.lr=50.0", "Global.epochs=6", print_fn=lines.append)
    ids_ = found(diag, ("error",))
    assert "nan_loss" in ids_ and ids_ & {"nan_layer", "nan_op", "nan_weights"}, ids_
    source = next(f for f in diag["findings"] if f["id"] in ("nan_layer", "nan_op", "nan_weights"))
    nan_step = next(f["step"] for f in diag["findings"] if f["id"] == "nan_loss")
    assert source["step"] == nan_step and m["global_step"] == nan_step  # stopped at once
    assert m["stopped_early"] and m["epochs_run"] < 6
    assert any(l.startswith("doctor: [error]") for l in lines)  # reported live, not only at the end
    # the update of the bad step was skipped: the weights saved at the end are finite
    state = paddle.load(os.path.join(m["run_dir"], "latest.pdparams"))
    assert all(np.isfinite(v.numpy()).all() for v in state.values())


def test_lr_far_too_low_is_flat(out):
    _, diag = run(out, "lr_low", "Optimizer.lr=1e-6", "Global.epochs=4")
    assert {"bottleneck", "uniform_confidence"} <= found(diag)


@pytest.fixture(scope="module")
def filelists(tmp_path_factory):
    from utils.data.synthetic import make_filelist

    root = tmp_path_factory.mktemp("filelists")
    perm = make_filelist(str(root / "perm"), classes=4, n_train_per_class=60, n_val_per_class=20, size=8, fmt="png")
    lines = open(perm["train_list"]).read().splitlines()
    labels = [l.rsplit(" ", 1)[1] for l in lines]
    np.random.RandomState(0).shuffle(labels)
    with open(perm["train_list"], "w") as f:
        f.writelines(f"{l.rsplit(' ', 1)[0]} {y}\n" for l, y in zip(lines, labels))
    # make_filelist writes the list sorted by class: 5 batches of 64 per class
    make_filelist(str(root / "sorted"), classes=4, n_train_per_class=320, n_val_per_class=20, size=8, fmt="png")
    return root


def test_permuted_labels_stay_at_chance(out, filelists):
    _, diag = run(out, "perm", "Data.name=filelist", f"Data.data_dir={filelists / 'perm'}", "Global.epochs=6")
    # at chance on average, or exactly the same chance-level accuracy every time
    assert found(diag) & {"acc_chance", "acc_stuck"}, diag["findings"]


def test_class_sorted_data_without_shuffling(out, filelists):
    _, diag = run(out, "sorted", "Data.name=filelist", f"Data.data_dir={filelists / 'sorted'}",
                  "DataLoader.shuffle=false", "Global.epochs=3")
    assert "unshuffled_batches" in found(diag)
    assert "divergence" not in found(diag)  # the loss jumps at class changes are explained, not an LR problem
    # printed before enough batches were sampled to see the sorting: the end report says what replaced it
    assert all(f["superseded_by"] == "unshuffled_batches" for f in diag.get("earlier_findings", [])
               if f["id"] in ("divergence", "oscillation"))


class _NaNAt(paddle.io.Dataset):
    """A training set whose sample ``bad`` has one NaN pixel."""

    def __init__(self, ds, bad):
        super().__init__()
        self.ds, self.bad = ds, bad

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        if i == self.bad:
            x = x.copy()
            x[0, 0, 0] = np.nan
        return x, y

    def __getattr__(self, name):
        return getattr(self.ds, name)


def test_nan_in_inputs(out, monkeypatch):
    build = utils.data.build_datasets

    def with_nan(cfg):
        bundle = build(cfg)
        bundle.train = _NaNAt(bundle.train, 100)
        return bundle

    monkeypatch.setattr(utils.data, "build_datasets", with_nan)
    # ... and where the trainer looks it up, should it hold its own reference
    monkeypatch.setattr(utils.trainer, "build_datasets", with_nan, raising=False)
    m, diag = run(out, "nan_input", "Global.epochs=3")
    # relu(NaN) is 0 in Paddle, so the loss can stay finite: the doctor checks the batch itself
    assert "nan_input" in found(diag)
    assert m["stopped_early"] and "non-finite" in m["stop_reason"]
    state = paddle.load(os.path.join(m["run_dir"], "latest.pdparams"))
    assert all(np.isfinite(v.numpy()).all() for v in state.values())


def test_deep_tanh_mlp_with_tiny_init_vanishes(out):
    _, diag = run(out, "tanh", "Arch.init=normal", "Arch.init_std=1e-4", "Arch.hidden=[64,64,64,64,64,64,64,64]",
                  "Arch.act_layer=Tanh", "Arch.dropout=0.0", "Global.epochs=2")
    assert {"vanishing_activations", "vanishing_gradients"} <= found(diag)


def test_dropout_near_one(out):
    _, diag = run(out, "dropout", "Arch.dropout=0.95", "Global.epochs=4")
    assert "dropout_too_strong" in found(diag)


def test_fifty_training_samples_overfit(out):
    m, diag = run(out, "n50", "Data.fraction=0.0348", "Optimizer.lr=0.01", "LRScheduler.name=constant",
                  "Arch.dropout=0.0", "Global.epochs=16", "EarlyStopping.enable=false")
    assert m["global_step"] == 16  # 50 images, one batch per epoch
    assert "overfitting" in found(diag)


def test_clipping_on_every_step_says_lower_the_lr(out):
    _, diag = run(out, "clip", "Optimizer.grad_clip=global_norm", "Optimizer.clip_value=0.001", "Global.epochs=3")
    assert "clipped_often" in found(diag)
    assert diag["stats"]["clip"]["samples"] >= 5


@pytest.mark.parametrize("config", ["configs/mlp_digits.yml", "configs/gmlp_digits.yml"])
def test_healthy_runs_get_no_warning(out, config):
    name = os.path.basename(config).split(".")[0] + "_ok"
    m, diag = run(out, name, "Global.epochs=3", config=config)
    assert found(diag) == set(), diag["findings"]
    stats = diag["stats"]
    steps = m["global_step"]
    assert [s for s, _ in stats["grad_norm"]] == [1] + list(range(10, steps + 1, 10)) + ([steps] if steps % 10 else [])
    assert stats["layers_step"] == steps and stats["layers"] and stats["grads"]
    assert all(math.isfinite(v) and v > 0 for _, v in stats["grad_norm"])
    # VisualDL: gradient norm and confidence scalars, the report as text
    from visualdl import LogReader

    log = next(f for f in os.listdir(m["run_dir"]) if f.startswith("vdlrecords."))
    tags = LogReader(file_path=os.path.join(m["run_dir"], log)).get_tags()
    assert {"training_doctor/grad_norm", "training_doctor/confidence"} <= set(tags["scalar"])
    assert "training_doctor/diagnosis" in tags["text"]


def test_doctor_can_be_turned_off(out):
    m, _ = run(out, "no_doctor_probe", "Global.epochs=1")
    cfg = load_config(os.path.join(ROOT, "configs/mlp_digits.yml"),
                      [f"Global.output_dir={out}", "Global.run_name=doctor_off", "Global.verbose=0", "Global.epochs=1",
                       "Doctor.enable=false"])
    m2 = train(cfg, print_fn=quiet)
    assert not os.path.exists(os.path.join(m2["run_dir"], "diagnosis.json"))
    assert m2["best"]["acc"] == m["best"]["acc"]  # the doctor does not change training


# ----------------------------------------------------------------------------- offline

def test_diagnose_run_offline_matches_live_and_survives_a_crash(out):
    run_dir = os.path.join(str(out), "mlp_digits", "lr_low")
    if not os.path.isdir(run_dir):
        run(out, "lr_low", "Optimizer.lr=1e-6", "Global.epochs=4")
    live = json.load(open(os.path.join(run_dir, "diagnosis.json")))
    offline = D.diagnose_run(run_dir, "zh")
    assert found(offline) == found(live) and offline["text"].startswith("训练诊断")
    assert set(offline["sources"]) == {"metrics.json", "diagnosis.json", "config.yml", "VisualDL log"}
    # a crashed run: no metrics.json and no diagnosis.json, only the config and the VisualDL log
    crashed = os.path.join(str(out), "crashed")
    shutil.copytree(run_dir, crashed)
    os.remove(os.path.join(crashed, "metrics.json"))
    os.remove(os.path.join(crashed, "diagnosis.json"))
    report = D.diagnose_run(crashed, "en")
    assert report["sources"] == ["config.yml", "VisualDL log"]
    assert "bottleneck" in found(report)


def test_diagnose_run_without_visualdl_keeps_the_step_findings(out):
    m, live = run(out, "lr_high_novdl", "Optimizer.lr=5.0", "Global.epochs=3", "VisualDL.enable=false")
    assert "divergence" in found(live)
    offline = D.diagnose_run(m["run_dir"])
    assert found(offline) == found(live)
    assert "VisualDL log" not in offline["sources"]


def run_tool(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "tools/diagnose.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=120)


def test_diagnose_tool(out, tmp_path):
    run_dir = os.path.join(str(out), "mlp_digits", "dropout")
    if not os.path.isdir(run_dir):
        run(out, "dropout", "Arch.dropout=0.95", "Global.epochs=4")
    proc = run_tool(run_dir, "--lang", "zh", "--json", str(tmp_path / "d.json"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("训练诊断") and "dropout_too_strong" in proc.stdout and "建议：" in proc.stdout
    report = json.load(open(tmp_path / "d.json", encoding="utf-8"))
    assert "dropout_too_strong" in found(report)
    proc = run_tool(str(tmp_path / "no_such_run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [l for l in proc.stderr.splitlines() if l.startswith("error:")] == [
        f"error: {tmp_path / 'no_such_run'}: not a directory (pass a run directory such as output/gmlp_digits/<timestamp>)"]
    proc = run_tool(str(tmp_path))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr


# -- the doctor never ends a run, and its numbers hold

def _boom(*a, **k):
    raise RuntimeError("injected")


@pytest.mark.parametrize("target", ["rule", "on_train_batch_end", "on_eval_end"])
def test_a_failing_doctor_part_warns_once_and_training_finishes(out, monkeypatch, target):
    """An exception in a rule or a hook: one line naming the part and the cause, the run ends normally."""
    import utils.doctor.rules as rules

    if target == "rule":
        monkeypatch.setattr(rules, "rule_plateau", _boom)
    else:
        from utils.doctor.callback import Doctor

        monkeypatch.setattr(Doctor, target, _boom)
    printed = []
    m, _ = run(out, f"broken_{target}", "Global.epochs=2", print_fn=printed.append)
    with open(os.path.join(m["run_dir"], "metrics.json"), encoding="utf-8") as f:
        assert json.load(f)["status"] == "finished"
    assert m["epochs_run"] == 2
    warned = [ln for ln in printed if isinstance(ln, str) and ln.startswith("warning: doctor")]
    part = "rule rule_plateau" if target == "rule" else f"hooks ({target})"
    assert warned == [warned[0]] and f"doctor {part} failed (RuntimeError: injected)" in warned[0], warned


def test_rules_take_collapsed_statistics():
    """After divergence: float32 confidences all 1.0, gradients ~1e-13, dead layers; no rule raises."""
    steps = range(1, 201)
    series = RunSeries(train_loss=[(s, 2.3) for s in steps],
                       evals=evals_from([2.3] * 6, [2.3] * 6, [0.1] * 6),
                       grad_norm=[(s, float(np.float32(1e-13))) for s in steps],
                       confidence=[(s, float(np.float32(1.0))) for s in steps],
                       grads=[{"name": f"l{i}.weight", "rms": 1e-13, "ndim": 2} for i in range(3)], grads_step=200,
                       layers=[{"name": "fc", "type": "Linear", "rms": 0.0, "absmax": 0.0, "dead": None},
                               {"name": "act", "type": "ReLU", "rms": 0.0, "absmax": 0.0, "dead": 1.0}],
                       layers_step=200, input_rms=0.0, clip={"samples": 20, "clipped": 0})
    failed = {}
    found = diagnose(series, ctx(), failed)
    assert failed == {} and found and ids(found)


def test_line_change_stays_within_the_values():
    from utils.doctor.series import line_change

    # a loss that fell fast then flattened: the fitted line ends below zero; the change cannot pass -100%
    absolute, relative = line_change([1.0, 0.1, 0.05, 0.04, 0.04])
    assert -1.0 < relative < 0 and absolute >= -(1.0 - 0.04)
    assert line_change([3.0, 2.0, 1.0]) == pytest.approx((-2.0, -2 / 3))
    evals = evals_from([1.0, 0.1, 0.05, 0.04, 0.04], [1.2, 0.3, 0.2, 0.25, 0.3])
    for f in diagnose(RunSeries(evals=evals), ctx()):
        for k in ("train_change", "val_change"):
            assert f.evidence.get(k, 0) > -1.0, f.text()


def test_plateau_best_is_never_nan():
    """Regression evaluations without a finite MAE: the plateau names the loss, not 'best mae nan'."""
    evals = [{"step": 10 * i, "epoch": i, "loss": 0.5, "acc": None, "mae": float("nan"), "train_loss": 0.5}
             for i in range(1, 9)]
    found = [f for f in diagnose(RunSeries(evals=evals), ctx(task="regression", baseline_loss=1.0)) if f.id == "plateau"]
    assert found and found[0].evidence["metric"] == "loss" and found[0].evidence["best_metric"] == 0.5
    assert "nan" not in found[0].message("en") and "nan" not in found[0].message("zh")


def test_no_overfitting_while_the_val_loss_is_at_its_best():
    # train falls, the val loss falls a little too: flat by the line, but the last one is the best
    evals = evals_from([1.0, 0.8, 0.6, 0.4, 0.2], [0.07020, 0.07015, 0.07010, 0.07008, 0.07005], [0.5] * 5)
    assert "overfitting" not in ids(diagnose(RunSeries(evals=evals), ctx()))


def test_healthy_early_stopped_run_is_info_only():
    """Converged (acc 0.98) and stopped by early stopping 10 evaluations after the best: no warning."""
    val = [0.5, 0.2, 0.1, 0.06] + [0.062, 0.064, 0.063, 0.066, 0.065, 0.064, 0.066, 0.067, 0.066, 0.068]
    train = [0.8, 0.3, 0.1, 0.05] + [0.04 - 0.003 * i for i in range(10)]
    evals = evals_from(train, val, [0.8, 0.93, 0.96, 0.98] + [0.98] * 10)
    found = diagnose(RunSeries(evals=evals), ctx(steps_per_epoch=20))
    assert ids(found, ("error", "warn")) == [] and {"plateau", "overfitting"} & set(ids(found))
    # the same curves at 40% accuracy are not healthy: the plateau stays a warning
    found = diagnose(RunSeries(evals=evals_from(train, val, [0.4] * 14)), ctx())
    assert "plateau" in ids(found, ("warn",))


def test_below_chance_is_its_own_finding():
    evals = evals_from([2.0] * 6, [2.6] * 6, [0.02, 0.03, 0.02, 0.01, 0.02, 0.02])
    found = diagnose(RunSeries(evals=evals), ctx())
    assert "below_chance" in ids(found, ("warn",)) and not {"acc_chance", "acc_stuck"} & set(ids(found))
    # an imbalanced val set (majority 0.5): a low accuracy there is the chance rule's business
    found = diagnose(RunSeries(evals=evals), ctx(majority_rate=0.5))
    assert "below_chance" not in ids(found)


def test_one_report_never_says_raise_and_lower_the_lr():
    from utils.doctor.rules import resolve_lr_conflicts

    up = Finding("uniform_confidence", "warn", {"from_step": 150, "confidence": 0.12, "uniform": 0.1,
                                                 "num_classes": 10}, 200)
    down = Finding("divergence", "error", {"value": 9.0, "best": 1.0, "best_step": 20, "ratio": 9.0}, 120)
    resolve_lr_conflicts([up, down])
    assert up.set_aside_for == "divergence" and down.set_aside_for is None
    for lang in D.LANGS:
        assert "divergence" in up.remedy(lang) and "lr_find" in up.remedy(lang)
    assert "raise the learning rate" not in up.remedy("en") and "set aside" in up.text("en")
    text = D.format_report([up, down])
    assert "raise the learning rate" not in text and "lower Optimizer.lr" in text
    assert Finding.from_dict(up.to_dict()).set_aside_for == "divergence"


def test_end_summary_holds_every_finding_printed_live():
    from utils.doctor.callback import Doctor
    from utils.training.callbacks import Progress

    printed = []
    doc = Doctor(Progress(0, 10, 20), ctx(), print_fn=printed.append)
    doc.series.finished = False
    train = [2.0, 1.8, 1.6, 1.4, 1.2, 1.0, 0.9, 0.85, 0.8]
    val = [1.5, 1.4, 1.3, 1.5, 1.7, 1.9, 1.2, 1.1, 1.0]
    for e in evals_from(train, val, [0.4] * 9):
        doc.series.evals.append(e)
        doc.report_new(("error", "warn"))
    assert any("overfitting" in p for p in printed)  # said during the run ...
    doc.on_train_end()
    summary = printed[-1]
    assert "still_learning" in summary and "overfitting" in summary  # ... and kept, saying what replaced it
    assert "at the end replaced by still_learning" in summary
    report = doc.report()
    assert [f["id"] for f in report["earlier_findings"]] == ["overfitting"]
    assert report["earlier_findings"][0]["superseded_by"] == "still_learning"
    assert "overfitting" not in {f["id"] for f in report["findings"]}  # the counts are the end state's


def _fast_healthy_configs():
    # the shipped configs that run to their end in seconds (mlp_digits ~12 s, mlp_diabetes ~3 s on 2 shared
    # cores); the CNN/ResNet/gMLP ones take 1-6 minutes each and are checked by hand
    return ["configs/mlp_digits.yml", "configs/mlp_diabetes.yml"]


@pytest.mark.parametrize("config", _fast_healthy_configs())
def test_shipped_configs_end_without_warnings(out, config):
    """The fastest shipped configs, run to their normal end: no warning or error from the doctor."""
    name = os.path.basename(config).split(".")[0] + "_shipped"
    m, diag = run(out, name, config=config)
    assert m["status"] in ("finished", "stopped") and "doctor" not in str(m.get("stop_reason") or "")  # early stopping
    assert found(diag) == set(), [f["message"] for f in diag["findings"]]


@pytest.mark.parametrize("val,train", [
    # googlenet_digits, epochs 1-9: a val loss rise while the train loss rose too, then a one-evaluation spike
    ([58.2, 0.755, 0.189, 0.0895, 0.125, 0.1335, 0.099, 0.0936, 0.1344],
     [1.88, 0.534, 0.200, 0.106, 0.124, 0.114, 0.0554, 0.0402, 0.0306]),
    # resnet20_sa_digits, epochs 1-8: the train loss near zero and still falling while the val loss falls
    ([0.546, 0.364, 0.0876, 0.086, 0.061, 0.0651, 0.064, 0.0483], [1.33, 0.157, 0.0788, 0.0254, 0.0066, 0.0047,
                                                                    0.0071, 0.0021]),
])
def test_real_healthy_curves_raise_no_warning_at_any_evaluation(val, train):
    """Live, the doctor judges every prefix of the run: none of these may warn (the runs ended at 0.98-0.99)."""
    accs = [0.1, 0.83, 0.955, 0.978, 0.964, 0.969, 0.978, 0.98, 0.961][:len(val)]
    for k in range(3, len(val) + 1):
        evals = evals_from(train[:k], val[:k], accs[:k], every=23)
        found = diagnose(RunSeries(evals=evals, finished=False), ctx(steps_per_epoch=23))
        assert ids(found, ("error", "warn")) == [], (k, [f.text() for f in found])


def test_persistent_val_rise_with_falling_train_loss_is_still_overfitting():
    val = [1.0, 0.6, 0.4, 0.35, 0.45, 0.55, 0.65]
    train = [1.0, 0.6, 0.35, 0.25, 0.15, 0.08, 0.04]
    found = diagnose(RunSeries(evals=evals_from(train, val, [0.5] * 7)), ctx())
    assert "overfitting" in ids(found, ("warn",))


def test_oscillation_is_not_judged_on_the_first_steps():
    """The first steps fall from ln C in large noisy jumps: learning, not overshooting."""
    rng = np.random.RandomState(0)
    early = [(s, max(2.3 * math.exp(-s / 8) + 0.4 * rng.randn(), 0.01)) for s in range(1, 37)]
    assert "oscillation" not in ids(diagnose(RunSeries(train_loss=early, finished=False), ctx()))
    later = early + [(s, max(0.4 + 0.5 * rng.randn(), 0.01)) for s in range(37, 121)]
    assert "oscillation" in ids(diagnose(RunSeries(train_loss=later), ctx()))


def test_two_stage_finetune_judges_the_second_stage_on_its_own():
    """finetune_digits: the body unfreezes after 2 epochs (24 steps) and both losses jump, then fall to 0.97."""
    train = [2.6095, 1.373, 3.0519]  # the run's first three evaluations (steps 12, 24, 36)
    val = [1.407, 1.2736, 5.6095]
    evals = evals_from(train, val, [0.622, 0.733, 0.511], every=12)
    series = RunSeries(evals=evals, train_loss=[(s, 0.5) for s in range(1, 37)], finished=False)
    assert "both_rising" in ids(diagnose(series, ctx(steps_per_epoch=12)), ("error",))  # without the stage known
    assert ids(diagnose(series, ctx(steps_per_epoch=12, restart_step=24)), ("error", "warn")) == []
    from utils.doctor.config_context import run_context

    cfg = load_config(os.path.join(ROOT, "configs/finetune_digits.yml"), [])
    assert run_context(cfg, steps_per_epoch=12).restart_step == 24
