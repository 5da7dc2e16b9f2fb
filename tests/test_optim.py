"""utils/training/optim.py: LR schedules (hand-computed values), plateau, state round trips, optimizers,
regularizers, gradient clipping and the label-smoothed loss."""
import math

import numpy as np
import paddle
import pytest

from utils.config import SCHEDULES, validate
from utils.errors import ConfigError
from utils.schedules import SCHEDULES as SCHEDULE_TABLE
from utils.schedules import get_schedule, list_schedules, register_schedule
from utils.training.losses import build_loss
from utils.training.optim import ClosedFormLR, build_lr_scheduler, build_optimizer, current_lr, schedule_warnings

OPTIMIZERS = ["SGD", "Momentum", "Adam", "AdamW", "RMSProp", "Adadelta"]


def make_cfg(sched="constant", opt="SGD", lr=0.1, loss=None, **sched_kw):
    body = {"Optimizer": {"name": opt, "lr": lr}, "LRScheduler": dict(name=sched, **sched_kw)}
    if loss is not None:
        body["Loss"] = loss
    return validate(body)


def make_sched(sched, spe=10, epochs=10, lr=0.1, **kw):
    return build_lr_scheduler(make_cfg(sched, lr=lr, **kw), spe, epochs)


def lrs_by_stepping(s, n):
    """LR used by iterations 0..n-1, obtained the engine's way (one step() per iteration)."""
    out = []
    for _ in range(n):
        out.append(s())
        s.step()
    return out


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def tiny_linear(weight=((0.5,), (-0.25,)), bias=(0.3,), **kw):
    net = paddle.nn.Linear(2, 1, **kw)
    net.weight.set_value(np.asarray(weight, "float32"))
    net.bias.set_value(np.asarray(bias, "float32"))
    return net


def one_step(net, opt, x, coef=1.0):
    """One optimizer step on loss = coef * sum(net(x)); returns (raw grads, applied updates)."""
    before = [p.numpy().copy() for p in net.parameters()]
    (net(paddle.to_tensor(np.asarray(x, "float32"))) * coef).sum().backward()
    grads = [p.grad.numpy().copy() for p in net.parameters()]
    opt.step()
    opt.clear_grad()
    deltas = [p.numpy() - b for p, b in zip(net.parameters(), before)]
    return grads, deltas


# ------------------------------------------------------------------------- schedules

def test_stepping_matches_closed_form_and_is_a_paddle_scheduler():
    s = make_sched("cosine", warmup_epochs=1, warmup_start_lr=0.01)
    assert isinstance(s, paddle.optimizer.lr.LRScheduler)
    assert s.last_epoch == 0 and s.warmup_steps == 10 and s.total_steps == 100 and s.main_steps == 90
    got = lrs_by_stepping(s, 120)
    assert got == [s.lr_at(t) for t in range(120)]


def test_constant():
    s = make_sched("constant")
    assert set(lrs_by_stepping(s, 150)) == {0.1}


def test_step_decays_exactly_at_epoch_boundaries():
    lrs = lrs_by_stepping(make_sched("step", step_size=2, gamma=0.1), 45)
    assert lrs[0] == approx(0.1) and lrs[19] == approx(0.1)
    assert lrs[20] == approx(0.01) and lrs[39] == approx(0.01)
    assert lrs[40] == approx(0.001)


def test_step_fractional_step_size():
    s = make_sched("step", step_size=0.5, gamma=0.5)  # every 5 iterations
    assert s.lr_at(4) == approx(0.1) and s.lr_at(5) == approx(0.05) and s.lr_at(10) == approx(0.025)


def test_multistep_unsorted_milestones():
    lrs = lrs_by_stepping(make_sched("multistep", milestones=[5, 3], gamma=0.1), 60)
    assert lrs[29] == approx(0.1) and lrs[30] == approx(0.01)
    assert lrs[49] == approx(0.01) and lrs[50] == approx(0.001) and lrs[59] == approx(0.001)


def test_exponential_per_epoch_and_in_between():
    s = make_sched("exponential", gamma=0.5)
    assert s.lr_at(0) == approx(0.1)
    assert s.lr_at(10) == approx(0.05) and s.lr_at(20) == approx(0.025)
    assert s.lr_at(15) == approx(0.1 * 0.5 ** 1.5)  # smooth inside the epoch
    assert s.lr_at(3) == approx(0.1 * 0.5 ** 0.3)


def test_inverse_time():
    s = make_sched("inverse_time", gamma=0.5)
    assert s.lr_at(0) == approx(0.1)
    assert s.lr_at(20) == approx(0.1 / 2.0)  # epoch 2: 1 + 0.5 * 2
    assert s.lr_at(5) == approx(0.1 / 1.25)  # epoch 0.5


def test_cosine_midpoint_end_and_clamp():
    s = make_sched("cosine", eta_min=0.01)  # 100 iterations
    assert s.lr_at(0) == approx(0.1)
    assert s.lr_at(50) == approx((0.1 + 0.01) / 2)
    assert s.lr_at(25) == approx(0.01 + 0.09 * (1 + math.cos(math.pi / 4)) / 2)
    assert s.lr_at(100) == approx(0.01) and s.lr_at(250) == approx(0.01)
    lrs = lrs_by_stepping(s, 101)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_warmup_start_middle_end():
    s = make_sched("constant", warmup_epochs=1, warmup_start_lr=0.01)
    lrs = lrs_by_stepping(s, 12)
    assert lrs[0] == approx(0.01)
    assert lrs[5] == approx((0.01 + 0.1) / 2)
    assert lrs[10] == approx(0.1) and lrs[11] == approx(0.1)
    assert all(a < b for a, b in zip(lrs[:11], lrs[1:11]))


def test_warmup_fractional_epochs():
    s = make_sched("constant", warmup_epochs=0.5, warmup_start_lr=0.0)
    assert s.warmup_steps == 5
    assert s.lr_at(0) == 0.0 and s.lr_at(1) == approx(0.02) and s.lr_at(5) == approx(0.1)


def test_warmup_shifts_the_main_clock():
    # step decay: 1 warmup epoch + step_size 2 -> the first decay after epoch 3
    s = make_sched("step", step_size=2, gamma=0.1, warmup_epochs=1)
    assert s.lr_at(29) == approx(0.1) and s.lr_at(30) == approx(0.01)
    # cosine over the 80 iterations after a 20-iteration warmup: midpoint at 20 + 40
    c = make_sched("cosine", eta_min=0.0, warmup_epochs=2, warmup_start_lr=0.0)
    assert c.lr_at(10) == approx(0.05) and c.lr_at(20) == approx(0.1)
    assert c.lr_at(60) == approx(0.05) and c.lr_at(100) == approx(0.0)


def test_polynomial():
    s = make_sched("polynomial", end_lr=0.001, power=2.0)
    assert s.lr_at(0) == approx(0.1)
    assert s.lr_at(50) == approx(0.001 + 0.099 * 0.25)
    assert s.lr_at(100) == approx(0.001) and s.lr_at(1000) == approx(0.001)
    lin = make_sched("polynomial", end_lr=0.0, power=1.0)
    assert lin.lr_at(30) == approx(0.07)


def test_onecycle_peak_and_no_error_past_the_end():
    s = make_sched("onecycle", pct_start=0.3, div_factor=25.0, end_lr=0.0)
    lrs = lrs_by_stepping(s, 150)  # 50 steps past the end: Paddle's OneCycleLR raises here
    assert lrs[0] == approx(0.1 / 25)
    assert lrs[15] == approx((0.004 + 0.1) / 2)  # halfway up the cosine rise
    assert lrs[30] == approx(0.1) and max(lrs) == lrs[30]
    assert lrs[65] == approx(0.05)  # halfway down (30 + 70 / 2)
    assert lrs[100] == approx(0.0) and lrs[149] == approx(0.0)
    s2 = make_sched("onecycle", end_lr=0.001)
    assert s2.lr_at(100) == approx(0.001) and s2.lr_at(10 ** 6) == approx(0.001)


# ------------------------------------------------------------------------- plateau

def plateau(**kw):
    kw.setdefault("patience", 2)
    kw.setdefault("factor", 0.5)
    return make_sched("plateau", **kw)


def feed(s, values, key="loss"):
    out = []
    for v in values:
        s.eval_step({key: v, "acc": 0.5} if key != "acc" else {key: v, "loss": 1.0})
        out.append(s())
    return out


def test_plateau_reduces_after_patience_bad_evals():
    s = plateau()
    # best, 2 bad evals tolerated (patience=2), the 3rd bad one reduces; an improvement resets
    assert feed(s, [1.0, 1.0, 1.0]) == approx([0.1, 0.1, 0.1])
    assert feed(s, [1.0]) == approx([0.05])
    assert feed(s, [0.5, 0.6, 0.6, 0.6]) == approx([0.05, 0.05, 0.05, 0.025])


def test_plateau_threshold_is_relative():
    s = plateau(patience=0, threshold=0.1)
    assert feed(s, [1.0, 0.95]) == approx([0.1, 0.05])  # 0.95 is not 10% better than 1.0
    s = plateau(patience=0, threshold=0.1)
    assert feed(s, [1.0, 0.85]) == approx([0.1, 0.1])


def test_plateau_cooldown():
    no_cd = feed(plateau(cooldown=0), [1.0] * 8)
    cd = feed(plateau(cooldown=1), [1.0] * 8)
    assert no_cd == approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
    assert cd == approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025])


def test_plateau_min_lr():
    s = plateau(patience=0, factor=0.1, min_lr=0.005)
    assert feed(s, [1.0, 1.0, 1.0, 1.0]) == approx([0.1, 0.01, 0.005, 0.005])


def test_plateau_mode_max():
    s = plateau(patience=0, monitor="acc", mode="max")
    assert feed(s, [0.5, 0.6, 0.7], key="acc") == approx([0.1, 0.1, 0.1])
    assert feed(s, [0.65], key="acc") == approx([0.05])


def test_plateau_missing_metric_names_key_and_available():
    s = plateau(monitor="acc_top5")
    with pytest.raises(ConfigError, match=r"LRScheduler\.monitor.*acc_top5.*acc, loss"):
        s.eval_step({"loss": 0.5, "acc": 0.9})


def test_eval_step_is_noop_for_other_schedules():
    s = make_sched("cosine")
    s.step()
    before = s()
    s.eval_step({"nothing": 1.0})
    assert s() == before


def test_plateau_accepts_list_metrics_and_warmup():
    s = plateau(patience=0, warmup_epochs=1, warmup_start_lr=0.0)
    assert s() == 0.0
    for _ in range(5):
        s.step()
    assert s() == approx(0.05)
    s.eval_step({"loss": [1.0]})
    s.eval_step({"loss": np.array([1.0])})  # bad -> reduced: warmup now heads to 0.05
    assert s() == approx(0.025)


def test_plateau_reduction_changes_the_lr_the_optimizer_uses():
    cfg = make_cfg("plateau", opt="SGD", patience=0, factor=0.5)
    s = build_lr_scheduler(cfg, 10, 5)
    net = tiny_linear()
    opt = build_optimizer(cfg, net.parameters(), s)
    x = [[1.0, 2.0]]
    g, d = one_step(net, opt, x)
    s.step()
    np.testing.assert_allclose(d[0], -0.1 * g[0], rtol=1e-5)
    s.eval_step({"loss": 1.0})
    s.eval_step({"loss": 1.0})
    assert current_lr(opt) == approx(0.05)
    g, d = one_step(net, opt, x)
    np.testing.assert_allclose(d[0], -0.05 * g[0], rtol=1e-5)
    np.testing.assert_allclose(d[1], -0.05 * g[1], rtol=1e-5)


def test_plateau_reduction_under_hapi_train_batch():
    cfg = make_cfg("plateau", opt="Momentum", patience=0, factor=0.1)
    s = build_lr_scheduler(cfg, 10, 5)
    net = tiny_linear()
    model = paddle.Model(net)
    model.prepare(build_optimizer(cfg, net.parameters(), s), paddle.nn.MSELoss())
    x, y = np.array([[1.0, 2.0]], "float32"), np.array([[0.0]], "float32")
    s.eval_step({"loss": 1.0})
    s.eval_step({"loss": 1.0})  # 0.1 -> 0.01 before any training step
    w0 = net.weight.numpy().copy()
    out = net(paddle.to_tensor(x)).numpy()
    model.train_batch([x], [y])
    grad = 2 * (out - y) * x.T  # d/dw (w.x + b - y)^2, first Momentum step = lr * grad
    np.testing.assert_allclose(net.weight.numpy() - w0, -0.01 * grad, rtol=1e-4)


def test_per_parameter_lr_multiplier_still_works():
    cfg = make_cfg("constant", opt="Momentum")
    net = tiny_linear(weight_attr=paddle.ParamAttr(learning_rate=0.5))
    opt = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 10, 1))
    g, d = one_step(net, opt, [[1.0, 2.0]])
    np.testing.assert_allclose(d[0], -0.05 * g[0], rtol=1e-5)
    np.testing.assert_allclose(d[1], -0.1 * g[1], rtol=1e-5)


# ------------------------------------------------------------------------- state

def sgd_with(cfg, spe=10, epochs=10):
    s = build_lr_scheduler(cfg, spe, epochs)
    return s, build_optimizer(cfg, tiny_linear().parameters(), s)


@pytest.mark.parametrize("name,kw,evals,expect", [
    ("cosine", dict(warmup_epochs=2, warmup_start_lr=0.001, eta_min=0.001), [], {}),
    ("onecycle", dict(end_lr=0.0001), [], {}),
    # plateau saved with a pending bad evaluation, then saved in the middle of a cooldown
    ("plateau", dict(patience=1, factor=0.5, cooldown=2, warmup_epochs=2),
     [1.0, 1.0, 1.0, 1.0, 0.9, 0.95], dict(plateau_scale=0.5, best=0.9, num_bad=1, cooldown_counter=0)),
    ("plateau", dict(patience=1, factor=0.5, cooldown=5),
     [1.0, 1.0, 1.0, 0.9, 1.0, 1.0], dict(plateau_scale=0.5, best=0.9, num_bad=0, cooldown_counter=2)),
])
def test_state_round_trip_through_optimizer_state_dict(tmp_path, name, kw, evals, expect):
    cfg = make_cfg(name, **kw)
    s, opt = sgd_with(cfg)
    evals = list(evals)
    for i in range(15):
        s.step()
        if i % 2 == 1 and evals:
            s.eval_step({"loss": evals.pop(0)})
    state = s.state_dict()
    assert state["last_epoch"] == 15
    for k, v in expect.items():
        assert state[k] == approx(v), k
    path = str(tmp_path / "opt.pdopt")
    paddle.save(opt.state_dict(), path)
    assert "LR_Scheduler" in paddle.load(path)

    s2, opt2 = sgd_with(cfg)
    assert s2.last_epoch == 0
    opt2.set_state_dict(paddle.load(path))
    assert s2.state_dict() == s.state_dict()
    assert current_lr(opt2) == current_lr(opt)
    a, b = [], []
    for i in range(20):
        for sch, out in ((s, a), (s2, b)):
            out.append(sch())
            sch.step()
            if i % 4 == 3:
                sch.eval_step({"loss": 1.0})
    assert a == b
    assert len(set(a)) > 1  # the schedule moved: the comparison means something


def test_set_state_dict_accepts_plain_paddle_state():
    s = make_sched("step", step_size=1, gamma=0.5)
    s.set_state_dict({"last_epoch": 25, "last_lr": 123.0})
    assert s.last_epoch == 25 and s() == approx(0.025)  # recomputed from the iteration


# ------------------------------------------------------------------------- warnings

def test_schedule_warnings_flags_late_milestones_and_not_a_valid_config():
    bad = make_cfg("multistep", milestones=[30, 60, 90])
    w = schedule_warnings(bad, 60)
    assert len(w) == 1 and "[60, 90]" in w[0] and "milestones" in w[0]
    assert schedule_warnings(make_cfg("multistep", milestones=[10, 20]), 30) == []
    assert schedule_warnings(validate({}), 30) == []  # the default config


def test_schedule_warnings_other_cases():
    assert any("step_size" in w for w in schedule_warnings(make_cfg("step", step_size=30), 30))
    assert schedule_warnings(make_cfg("step", step_size=10), 30) == []
    assert any("warmup" in w for w in schedule_warnings(make_cfg("cosine", warmup_epochs=5), 5))
    assert any("more than half" in w for w in schedule_warnings(make_cfg("onecycle", warmup_epochs=8), 10))
    assert any("mode: max" in w for w in schedule_warnings(make_cfg("plateau", monitor="acc", mode="min"), 10))
    assert schedule_warnings(make_cfg("plateau", monitor="acc", mode="max"), 10) == []
    # milestone 9 + 2 warmup epochs lands after the last of 10 epochs
    assert schedule_warnings(make_cfg("multistep", milestones=[5, 9], warmup_epochs=2), 10) != []


@pytest.mark.parametrize("sched,kw,key", [
    ("onecycle", dict(pct_start=1.5), "LRScheduler.pct_start"),
    ("multistep", dict(milestones=["ten"]), "LRScheduler.milestones"),
    ("step", dict(step_size=0), "LRScheduler.step_size"),
    ("plateau", dict(factor=1.0), "LRScheduler.factor"),
    ("cosine", dict(warmup_epochs=-1), "LRScheduler.warmup_epochs"),
])
def test_invalid_schedule_values_are_config_errors(sched, kw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_sched(sched, **kw)


# ------------------------------------------------------------------------- optimizers

@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_steps_downhill(name):
    cfg = make_cfg("constant", opt=name)
    net = tiny_linear()
    opt = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 10, 1))
    assert type(opt).__name__ == name
    g, d = one_step(net, opt, [[1.0, 2.0], [0.5, 1.0]])
    for gi, di in zip(g, d):
        assert np.all(gi > 0) and np.all(di < 0)  # moved against the gradient
    if name == "SGD":
        np.testing.assert_allclose(d[0], -0.1 * g[0], rtol=1e-5)


def test_nesterov_differs_from_plain_momentum():
    deltas = {}
    for nesterov in (False, True):
        cfg = validate({"Optimizer": {"name": "Momentum", "lr": 0.1, "momentum": 0.9, "nesterov": nesterov},
                        "LRScheduler": {"name": "constant"}})
        net = tiny_linear()
        opt = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 10, 1))
        g, d = one_step(net, opt, [[1.0, 2.0]])
        deltas[nesterov] = (g, d)
    g, d = deltas[False]
    np.testing.assert_allclose(d[0], -0.1 * g[0], rtol=1e-5)  # v = g; w -= lr v
    g, d = deltas[True]
    np.testing.assert_allclose(d[0], -0.1 * 1.9 * g[0], rtol=1e-5)  # w -= lr (g + mu v)


@pytest.mark.parametrize("reg", ["L1", "L2"])
def test_l1_l2_regularization_hand_checked(reg):
    cfg = validate({"Optimizer": {"name": "SGD", "lr": 0.1, "weight_decay": 0.5, "regularizer": reg},
                    "LRScheduler": {"name": "constant"}})
    net = tiny_linear(weight=((0.5,), (-0.25,)), bias=(0.3,))
    opt = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 10, 1))
    _, d = one_step(net, opt, [[1.0, 2.0]])  # grads: w = [1, 2], b = 1
    w, gw = np.array([0.5, -0.25]), np.array([1.0, 2.0])
    pen_w = np.sign(w) if reg == "L1" else w
    pen_b = np.sign(0.3) if reg == "L1" else 0.3
    # L2: [-0.125, -0.19375], L1: [-0.125, -0.175]
    np.testing.assert_allclose(d[0].ravel(), -0.1 * (gw + 0.5 * pen_w), rtol=1e-5)
    np.testing.assert_allclose(d[1], [-0.1 * (1.0 + 0.5 * pen_b)], rtol=1e-5)


def test_adamw_decay_is_decoupled():
    cfg = validate({"Optimizer": {"name": "AdamW", "lr": 0.1, "weight_decay": 0.2},
                    "LRScheduler": {"name": "constant"}})
    net = tiny_linear()
    opt = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 10, 1))
    before = [p.numpy().copy() for p in net.parameters()]
    _, d = one_step(net, opt, [[1.0, 2.0]], coef=0.0)  # zero gradient
    for b, di in zip(before, d):
        np.testing.assert_allclose(b + di, b * (1 - 0.1 * 0.2), rtol=1e-5)  # w *= 1 - lr * wd
    # Adam with the same weight_decay as an L2 regularizer normalizes it away: |update| ~ lr
    cfg = validate({"Optimizer": {"name": "Adam", "lr": 0.1, "weight_decay": 0.2},
                    "LRScheduler": {"name": "constant"}})
    net = tiny_linear()
    opt = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 10, 1))
    _, d = one_step(net, opt, [[1.0, 2.0]], coef=0.0)
    np.testing.assert_allclose(np.abs(d[0]), 0.1, rtol=1e-3)


@pytest.mark.parametrize("mode", ["value", "norm", "global_norm"])
def test_grad_clip_bounds_the_applied_update(mode):
    cfg = validate({"Optimizer": {"name": "SGD", "lr": 1.0, "grad_clip": mode, "clip_value": 1.5},
                    "LRScheduler": {"name": "constant"}})
    net = tiny_linear()
    opt = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 10, 1))
    g, d = one_step(net, opt, [[1.0, 2.0]], coef=2.0)  # grads: w = [2, 4], b = 2
    gw, gb = g[0].ravel(), g[1]
    np.testing.assert_allclose(gw, [2.0, 4.0])
    np.testing.assert_allclose(gb, [2.0])
    if mode == "value":
        want_w, want_b = np.clip(gw, -1.5, 1.5), np.clip(gb, -1.5, 1.5)
    elif mode == "norm":
        want_w, want_b = gw * 1.5 / np.sqrt(20.0), gb * 1.5 / 2.0
    else:
        scale = 1.5 / np.sqrt(20.0 + 4.0)
        want_w, want_b = gw * scale, gb * scale
    np.testing.assert_allclose(-d[0].ravel(), want_w, rtol=1e-5)
    np.testing.assert_allclose(-d[1], want_b, rtol=1e-5)


def test_no_grad_clip_and_current_lr():
    cfg = make_cfg("step", opt="SGD", lr=1.0, step_size=1, gamma=0.5)
    s = build_lr_scheduler(cfg, 1, 5)
    net = tiny_linear()
    opt = build_optimizer(cfg, net.parameters(), s)
    g, d = one_step(net, opt, [[1.0, 2.0]], coef=2.0)
    np.testing.assert_allclose(-d[0], g[0], rtol=1e-6)  # unclipped
    assert current_lr(opt) == 1.0
    s.step()
    assert current_lr(opt) == 0.5


# ------------------------------------------------------------------------- loss

def test_label_smoothing_hand_computed():
    loss = build_loss(validate({"Loss": {"label_smoothing": 0.1}}), 3)
    logits = paddle.to_tensor([[2.0, 0.5, -1.0]])
    label = paddle.to_tensor([[0]], dtype="int64")
    lse = math.log(math.exp(2.0) + math.exp(0.5) + math.exp(-1.0))
    # target q = [0.9 + 0.1/3, 0.1/3, 0.1/3]; loss = -sum q log p
    want = (0.9 + 0.1 / 3) * (lse - 2.0) + 0.1 / 3 * (lse - 0.5) + 0.1 / 3 * (lse + 1.0)
    assert want == pytest.approx(0.3913, abs=1e-4)  # lse = 2.2413
    assert float(loss(logits, label)) == pytest.approx(want, rel=1e-6)
    assert float(loss(logits, label.reshape([1]))) == pytest.approx(want, rel=1e-6)  # [N] labels too
    # agrees with Paddle's own smoothing (which only accepts [N] int labels in 3.3.1)
    ref = paddle.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, label.reshape([1]))
    assert float(loss(logits, label)) == pytest.approx(float(ref), rel=1e-5)


def test_loss_without_smoothing_is_plain_cross_entropy_and_differentiable():
    loss = build_loss(validate({}), 3)
    logits = paddle.to_tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], stop_gradient=False)
    label = paddle.to_tensor([[1], [2]], dtype="int64")
    got = loss(logits, label)
    assert float(got) == pytest.approx(float(paddle.nn.CrossEntropyLoss()(logits, label)), rel=1e-6)
    got.backward()
    assert logits.grad is not None and np.allclose(logits.grad.numpy().sum(1), 0, atol=1e-6)


def test_invalid_label_smoothing():
    with pytest.raises(ConfigError, match=r"Loss\.label_smoothing"):
        build_loss(validate({"Loss": {"label_smoothing": 1.0}}), 3)


def test_closed_form_lr_rejects_unknown_name():
    with pytest.raises(ConfigError):
        ClosedFormLR("bogus", 0.1, 10, 1, {})


# ----------------------------------------------------------------------------- the schedule registry

@pytest.mark.parametrize("name", list_schedules())
def test_every_registered_schedule_is_valid_config_finite_and_holds_past_the_end(name):
    assert name in SCHEDULES  # the config schema reads the registry
    s = make_sched(name, spe=7, epochs=6, lr=0.2, warmup_epochs=1)
    total = s.total_steps
    lrs = [s.lr_at(t) for t in range(total + 10)]
    assert all(math.isfinite(v) and v >= 0 for v in lrs)
    assert lrs[0] == 0.0 and lrs[7] > 0  # warmup from warmup_start_lr 0 to the main schedule's start
    assert lrs[total + 9] == pytest.approx(lrs[total])


def test_a_registered_schedule_is_accepted_by_the_config_and_drives_the_lr():
    @register_schedule("halving_test")
    def halving(sch, s):
        return sch.base_lr * 0.5 ** (s // sch.steps_per_epoch)

    try:
        s = make_sched("halving_test", spe=5, epochs=4, lr=0.8)
        assert [s.lr_at(t) for t in (0, 4, 5, 10, 19)] == [0.8, 0.8, 0.4, 0.2, 0.1]
        with pytest.raises(ValueError, match="registered twice"):
            register_schedule("halving_test")(halving)
    finally:
        del SCHEDULE_TABLE["halving_test"]
    with pytest.raises(ConfigError, match="halving_test.*is not one of"):
        make_cfg("halving_test")


def test_unknown_schedule_names_the_registered_ones():
    with pytest.raises(ConfigError, match="did you mean 'cosine'.*registered schedules: constant, step"):
        get_schedule("cosin")
