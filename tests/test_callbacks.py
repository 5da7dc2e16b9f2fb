import math
import os

import numpy as np
import paddle
import pytest

from utils.errors import ConfigError, UserError
from utils.training.callbacks import BestTracker, EarlyStopping, PeriodicEval, Progress, StopOnNaN
from utils.training.checkpoint import CheckpointStore, load_state, load_weights, resolve_checkpoint


def run_sequence(es, values):
    """Feed scripted metric values; return the 1-based index of the evaluation that stops, or None."""
    for i, v in enumerate(values, 1):
        stop, _ = es.check(v, step=i)
        if stop:
            return i
    return None


@pytest.mark.parametrize("mode,patience,min_delta,values,expected_stop,expected_best", [
    ("max", 2, 0.0, [0.5, 0.6, 0.7, 0.69, 0.71, 0.70], None, 0.71),   # a tie is no improvement
    ("max", 2, 0.0, [0.5, 0.6, 0.7, 0.69, 0.68, 0.9], 5, 0.7),       # two evals without improvement
    ("max", 2, 0.05, [0.5, 0.52, 0.54, 0.6], 3, 0.5),                  # +0.02 is not > min_delta
    ("min", 3, 0.0, [1.0, 0.9, 0.95, 0.92, 0.91, 0.5], 5, 0.9),       # best is the minimum
    ("min", 0, 0.0, [1.0, 0.9, 0.9], 3, 0.9),                          # patience 0: first non-improvement
    ("max", 1, 0.0, [0.1, float("nan")], 2, 0.1),                      # NaN stops at once
])
def test_early_stopping_scripted(mode, patience, min_delta, values, expected_stop, expected_best):
    es = EarlyStopping("acc", mode, patience, min_delta)
    assert run_sequence(es, values) == expected_stop
    assert es.best == pytest.approx(expected_best)


def test_early_stopping_compares_to_best_not_last():
    # Slowly recovering after a dip does not reset patience: 0.8 is the best, 0.75..0.79 are not.
    es = EarlyStopping("acc", "max", 3)
    assert run_sequence(es, [0.8, 0.7, 0.75, 0.79]) == 4


def test_early_stopping_state_roundtrip_continues_exactly():
    seq = [0.5, 0.6, 0.55, 0.58, 0.59, 0.57]
    a = EarlyStopping("acc", "max", 4)
    full = run_sequence(a, seq)
    b = EarlyStopping("acc", "max", 4)
    run_sequence(b, seq[:3])
    c = EarlyStopping("acc", "max", 4)
    c.load_state_dict(b.state_dict())
    rest = run_sequence(c, seq[3:])
    assert full == 6 and rest == 3 and c.best == a.best and c.wait == a.wait


def test_early_stopping_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="patience"):
        EarlyStopping(patience=-1)
    with pytest.raises(ConfigError, match="mode"):
        EarlyStopping(mode="auto")
    with pytest.raises(ConfigError, match="min_delta"):
        EarlyStopping(min_delta=-0.1)


def test_early_stopping_unknown_metric_lists_available():
    es = EarlyStopping("accuracy", "max", 1)

    class M:
        stop_training = False
    es.set_model(M())
    with pytest.raises(ConfigError, match="available: loss, acc"):
        es.on_eval_end({"loss": 1.0, "acc": 0.5, "epoch": 1, "step": 3})


def test_early_stopping_requests_stop_mid_epoch():
    es = EarlyStopping("loss", "min", 0)

    class M:
        stop_training = False
    m = M()
    es.set_model(m)
    es.on_eval_end({"loss": 1.0, "step": 1})
    assert not m.stop_training
    es.on_eval_end({"loss": 2.0, "step": 2})
    assert m.stop_training and m.num_iters == 1 and "did not improve" in es.stop_reason


def test_best_tracker_modes():
    t = BestTracker("min", 0.1)
    assert t.update(1.0) and not t.update(0.95) and t.update(0.85) and not t.update(float("nan"))
    assert t.best == 0.85


def test_stop_on_nan_reason_names_step_and_remedy():
    p = Progress(0, 5, 10, epochs_done=1, global_step=13)
    g = StopOnNaN(p)
    assert g.check(0.3) == (False, "")
    stop, reason = g.check(math.inf)
    assert stop and "step 13" in reason and "Optimizer.lr" in reason


def test_periodic_eval_schedule():
    class Listener:
        def __init__(self):
            self.steps = []

        def on_eval_end(self, logs):
            self.steps.append((logs["epoch"], logs["step"]))

    class M:
        stop_training = False
    listener = Listener()
    p = Progress(seed=0, total_epochs=5, steps_per_epoch=4)
    ev = PeriodicEval(lambda: {"loss": 0.0, "acc": 1.0}, p, every_epochs=2, every_iters=6, listeners=[listener])
    ev.set_model(M())
    for epoch in range(5):
        p.on_epoch_begin(epoch)
        for s in range(4):
            p.on_train_batch_end(s)
            ev.on_train_batch_end(s)
        p.on_epoch_end(epoch)
        ev.on_epoch_end(epoch)
    # every 6 iterations: steps 6, 12, 18; after epochs 2 and 4 (steps 8, 16) and the last (step 20);
    # step 12 is both the 6-iteration mark and the end of epoch 3: one evaluation, not two.
    assert listener.steps == [(2, 6), (2, 8), (3, 12), (4, 16), (5, 18), (5, 20)]


def test_progress_reseeds_per_epoch():
    p = Progress(seed=7, total_epochs=3, steps_per_epoch=1)
    p.on_epoch_begin(0)
    a = np.random.rand()
    p.on_train_batch_end(0)
    p.on_epoch_end(0)
    p.on_epoch_begin(1)
    b = np.random.rand()
    q = Progress(seed=7, total_epochs=3, steps_per_epoch=1, epochs_done=1)
    q.on_epoch_begin(0)  # hapi's epoch 0 of a resumed fit is global epoch 1
    assert np.random.rand() == b and a != b


def test_checkpoint_store_atomic_and_resolvable(tmp_path):
    net = paddle.nn.Linear(3, 2)
    opt = paddle.optimizer.Adam(parameters=net.parameters())
    store = CheckpointStore(str(tmp_path))
    store.save("latest", net, opt, {"progress": {"epochs_done": 2}})
    assert sorted(os.listdir(tmp_path)) == ["latest.pdopt", "latest.pdparams", "latest.pdstates"]
    assert resolve_checkpoint(str(tmp_path)) == str(tmp_path / "latest")
    assert load_state(str(tmp_path / "latest"))["progress"]["epochs_done"] == 2

    # a save that fails half-way leaves the previous checkpoint intact and no temp files
    before = open(tmp_path / "latest.pdparams", "rb").read()

    class Broken(paddle.nn.Linear):
        def state_dict(self, *a, **k):
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        store.save("latest", Broken(3, 2), opt, {})
    assert open(tmp_path / "latest.pdparams", "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["latest.pdopt", "latest.pdparams", "latest.pdstates"]

    other = paddle.nn.Linear(3, 2)
    load_weights(other, str(tmp_path / "latest"))
    np.testing.assert_array_equal(other.weight.numpy(), net.weight.numpy())
    with pytest.raises(UserError, match="does not fit the model"):
        load_weights(paddle.nn.Linear(3, 4), str(tmp_path / "latest"))
    with pytest.raises(UserError, match="no best_model.pdparams.*checkpoints here: latest"):
        resolve_checkpoint(str(tmp_path), "best_model")
