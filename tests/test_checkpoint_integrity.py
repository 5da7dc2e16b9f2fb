"""Checkpoints are whole or absent: damaged files are found, resume falls back, tools say so in one line.

One real run (cnn on digits, 2 epochs, 30% of the data, ``epoch_N`` every epoch) is trained once
for the module; each test damages a copy of its directory.
"""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest
from tool_asserts import assert_user_error

from utils.config import load_config
from utils.errors import UserError
from utils.runs import open_run
from utils.trainer import train
from utils.training import checkpoint as ck
from utils.training.callbacks import Progress
from utils.training.checkpoint import (
    CheckpointStore,
    check_best,
    load_optimizer,
    load_state,
    load_weights,
    resolve_resume,
    restore_best,
    verify,
)
from utils.training.checkpointer import Checkpointer
from utils.training.files import remove_stale_temporaries, save_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAMAGES = ("truncated", "empty", "bitflip", "missing")
PARTS = (".pdparams", ".pdopt", ".pdstates")


def damage(path, how):
    """Damage one file the way a kill, a full disk or a bad sector would."""
    data = open(path, "rb").read()
    if how == "missing":
        os.remove(path)
        return
    if how == "empty":
        data = b""
    elif how == "truncated":
        data = data[: len(data) // 2]
    elif how == "bitflip":  # one bit in the middle: inside a tensor for .pdparams, where paddle.load still succeeds
        data = bytearray(data)
        data[len(data) // 2] ^= 0x04
        data = bytes(data)
    with open(path, "wb") as f:
        f.write(data)


def quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    cfg = load_config(os.path.join(ROOT, "configs/cnn_digits.yml"),
                      [f"Global.output_dir={out}", "Global.run_name=r", "Global.verbose=0", "Global.epochs=2",
                       "Data.fraction=0.3", "Doctor.enable=false", "VisualDL.enable=false",
                       "Checkpoint.save_every_epochs=1"])
    m = train(cfg, print_fn=quiet)
    return m["run_dir"]


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of the trained run directory."""
    dst = str(tmp_path / "run")
    shutil.copytree(trained, dst)
    return dst


def steps(run_dir, name):
    return load_state(os.path.join(run_dir, name))["progress"]["global_step"]


def test_the_trained_run_is_whole_with_manifests(run):
    names = ck.checkpoint_names(run)
    assert names == ["latest", "epoch_2", "epoch_1", "best_model"]
    for n in names:
        assert verify(os.path.join(run, n)) is None, n
        raw = json.load(open(os.path.join(run, n + ".pdstates")))
        assert set(raw["files"]) == {".pdparams", ".pdopt"}
        assert raw["files"][".pdparams"]["size"] == os.path.getsize(os.path.join(run, n + ".pdparams"))
        assert "files" not in load_state(os.path.join(run, n))  # the manifest is the store's, not training state
    assert steps(run, "latest") == steps(run, "epoch_2") == 2 * steps(run, "epoch_1") > 0
    prefix, state, notice = resolve_resume(run)
    assert (prefix, notice) == (os.path.join(run, "latest"), None) and state["progress"]["epochs_done"] == 2


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("part", PARTS)
def test_damaged_latest_falls_back_to_the_newest_whole_checkpoint(run, part, how):
    damage(os.path.join(run, "latest" + part), how)
    reason = verify(os.path.join(run, "latest"))
    assert reason is not None and "latest" + part in reason, reason
    prefix, state, notice = resolve_resume(run)
    # epoch_2 holds the same step as latest (one epoch ahead of epoch_1); at equal steps it goes before best_model
    assert prefix == os.path.join(run, "epoch_2")
    assert state["progress"]["global_step"] == steps(run, "epoch_2")
    assert "latest" + part in notice and "resuming from epoch_2" in notice and "\n" not in notice
    assert verify(prefix) is None


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("part", PARTS)
def test_damaged_only_checkpoint_is_a_clear_error(run, part, how):
    for f in os.listdir(run):
        if f.startswith(("epoch_", "best_model")):
            os.remove(os.path.join(run, f))
    damage(os.path.join(run, "latest" + part), how)
    with pytest.raises(UserError) as e:
        resolve_resume(run)
    msg = str(e.value)
    assert "no whole checkpoint to resume from" in msg and "latest" + part in msg and "\n" not in msg


def test_none_whole_lists_each_checkpoint_and_why(run):
    for f in os.listdir(run):
        if f.startswith("epoch_"):
            os.remove(os.path.join(run, f))
    damage(os.path.join(run, "latest.pdopt"), "missing")
    damage(os.path.join(run, "best_model.pdstates"), "empty")
    with pytest.raises(UserError, match=r"latest: latest.pdopt is missing; best_model: best_model.pdstates is empty"):
        resolve_resume(run)


def test_a_checkpoint_prefix_falls_back_in_its_run(run):
    damage(os.path.join(run, "epoch_1.pdparams"), "truncated")
    prefix, state, notice = resolve_resume(os.path.join(run, "epoch_1.pdparams"))
    assert prefix == os.path.join(run, "latest") and "epoch_1.pdparams" in notice
    with pytest.raises(UserError, match="checkpoint not found"):
        resolve_resume(os.path.join(run, "epoch_9"))


@pytest.mark.parametrize("how", DAMAGES)
def test_loaders_raise_one_line_naming_the_file(run, how):
    prefix = os.path.join(run, "latest")
    net = paddle.nn.Linear(2, 2)
    loaders = {".pdparams": lambda: load_weights(net, prefix),
               ".pdopt": lambda: load_optimizer(paddle.optimizer.SGD(parameters=net.parameters()), prefix),
               ".pdstates": lambda: load_state(prefix)}
    expect = {"missing": "is missing", "empty": "is empty", "truncated": "", "bitflip": ""}[how]
    for part, call in loaders.items():
        if part == ".pdstates" and how == "missing":
            continue  # load_state gives {} (EMA files may lack one); resolve_resume refuses such a checkpoint
        original = open(prefix + part, "rb").read()
        damage(prefix + part, how)
        with pytest.raises(UserError) as e:
            call()
        msg = str(e.value)
        assert "latest" + part in msg and expect in msg and "\n" not in msg and "--checkpoint" in msg, msg
        open(prefix + part, "wb").write(original)


def test_old_checkpoints_without_manifest_still_resume(run):
    for n in ("latest", "epoch_2", "epoch_1", "best_model"):
        path = os.path.join(run, n + ".pdstates")
        state = json.load(open(path))
        del state["files"], state["state_sha256"]
        json.dump(state, open(path, "w"))
    assert verify(os.path.join(run, "latest")) is None
    prefix, state, notice = resolve_resume(run)
    assert prefix.endswith("latest") and notice is None and state["progress"]["epochs_done"] == 2
    # without a manifest a truncated file is still found: it does not load
    damage(os.path.join(run, "latest.pdopt"), "truncated")
    prefix, _, notice = resolve_resume(run)
    assert prefix.endswith("epoch_2") and "latest.pdopt is unreadable" in notice


def test_eval_tool_on_a_damaged_best_model_is_one_line_exit_2(run):
    damage(os.path.join(run, "best_model.pdparams"), "bitflip")  # still loads: only the checksum tells
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "tools/eval.py", run], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)
    assert_user_error(proc, "best_model", "best_model.pdparams does not match its checksum", "--checkpoint latest")


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("part", (".pdparams", ".pdstates"))
def test_open_run_refuses_a_damaged_best_model(run, part, how):
    damage(os.path.join(run, "best_model" + part), how)
    if (part, how) == (".pdstates", "missing"):  # weights alone, like a downloaded .pdparams: used when it loads
        assert open_run(run).checkpoint == os.path.join(run, "best_model")
        damage(os.path.join(run, "best_model.pdparams"), "truncated")
    expect = ("no best_model.pdparams in this run directory" if (part, how) == (".pdparams", "missing")
              else r"best_model is damaged \(best_model\.pdparams is unreadable" if part == ".pdstates" and how == "missing"
              else r"best_model is damaged \(best_model" + part.replace(".", r"\.") + ".*--checkpoint latest")
    with pytest.raises(UserError, match=expect):
        open_run(run)
    assert open_run(run, "latest").checkpoint == os.path.join(run, "latest")
    # a damaged optimizer does not matter for evaluation
    if part == ".pdparams":
        damage(os.path.join(run, "latest.pdopt"), how)
        assert open_run(run, "latest").checkpoint == os.path.join(run, "latest")


def test_damaged_best_model_found_at_resume_and_replaced(run):
    store = CheckpointStore(run)
    assert check_best(store) is None
    net = paddle.nn.Linear(3, 2)
    ok, warning = restore_best(net, store)  # whole but another model: a warning, never an exception
    assert not ok and "does not fit the model" in warning
    damage(os.path.join(run, "best_model.pdparams"), "truncated")
    notice = check_best(store)
    assert "best_model" in notice and "truncated" in notice and "replaces it" in notice
    before = net.weight.numpy().copy()
    ok, warning = restore_best(net, store)
    assert not ok and "not restored" in warning and "best_model.pdparams" in warning
    np.testing.assert_array_equal(net.weight.numpy(), before)
    # after forget_best a worse evaluation than the recorded best still writes best_model
    progress = Progress(0, 3, 10, global_step=10)
    cp = Checkpointer(store, progress, {"progress": progress}, "acc", "max")
    cp.load_state_dict({"best": 0.99, "best_metrics": {"acc": 0.99}})
    cp.model = type("M", (), {"network": net, "_optimizer": None})()
    cp.forget_best()
    cp.on_eval_end({"acc": 0.5, "loss": 1.0, "epoch": 3, "step": 10})
    assert check_best(store) is None and cp.best_metrics["acc"] == 0.5
    ok, warning = restore_best(net, store)
    assert ok and warning is None
    assert check_best(CheckpointStore(str(os.path.join(run, "nothing-here")))) is None


def small_store(tmp_path):
    net = paddle.nn.Linear(4, 3)
    opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=net.parameters())
    return CheckpointStore(str(tmp_path)), net, opt


def fill(net, opt, value):
    """Weights and optimizer velocities all equal to ``value``, so every file says which save wrote it."""
    if not opt._accumulators:
        net(paddle.ones([1, 4])).sum().backward()
        opt.step()
        opt.clear_grad()
    for p in net.parameters():
        p.set_value(paddle.full(p.shape, float(value)))
    for acc in opt._accumulators.values():
        for t in acc.values():
            t.set_value(paddle.full(t.shape, float(value)))


def stamps(prefix):
    """(weights value, weight velocity value, state step) of a checkpoint, read back from its files."""
    w = float(paddle.load(prefix + ".pdparams")["weight"].numpy().ravel()[0])
    vel = [v for k, v in paddle.load(prefix + ".pdopt").items() if k.endswith("w_0_velocity_0")]
    return w, float(vel[0].numpy().ravel()[0]), load_state(prefix)["progress"]["global_step"]


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_a_kill_between_the_renames_never_leaves_a_mix(tmp_path, monkeypatch, fail_at):
    store, net, opt = small_store(tmp_path)
    fill(net, opt, 1.0)
    store.save("latest", net, opt, {"progress": {"global_step": 1}})
    store.save("epoch_1", net, opt, {"progress": {"global_step": 1}})
    old = stamps(store.prefix("latest"))
    assert old == (1.0, 1.0, 1)
    fill(net, opt, 2.0)
    real, count = os.replace, []

    def replace(src, dst):
        count.append(dst)
        if len(count) == fail_at:  # 1: .pdparams, 2: .pdopt, 3: .pdstates
            raise KeyboardInterrupt("killed")
        real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        store.save("latest", net, opt, {"progress": {"global_step": 2}})
    monkeypatch.setattr(os, "replace", real)
    assert count[fail_at - 1].endswith(PARTS[fail_at - 1])
    # the new latest is absent (its commit marker went first), and resume takes the whole epoch_1
    assert verify(store.prefix("latest")) == "latest.pdstates is missing (the save did not finish)"
    prefix, state, notice = resolve_resume(str(tmp_path))
    assert prefix == store.prefix("epoch_1") and stamps(prefix) == old and "latest.pdstates is missing" in notice
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_a_failed_write_keeps_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    store, net, opt = small_store(tmp_path)
    fill(net, opt, 1.0)
    store.save("latest", net, opt, {"progress": {"global_step": 1}})
    old = stamps(store.prefix("latest"))
    fill(net, opt, 2.0)
    real = paddle.save

    def full_disk(obj, path, *a, **k):
        if ".pdopt" in path:
            raise OSError(28, "No space left on device", path)
        real(obj, path, *a, **k)
    monkeypatch.setattr(paddle, "save", full_disk)
    with pytest.raises(OSError):
        store.save("latest", net, opt, {"progress": {"global_step": 2}})
    # the optimizer's write failed before the commit marker was touched: the old checkpoint is whole
    assert verify(store.prefix("latest")) is None and stamps(store.prefix("latest")) == old
    assert sorted(os.listdir(tmp_path)) == ["latest.pdopt", "latest.pdparams", "latest.pdstates"]
    # the Checkpointer reports a full disk in one line naming the checkpoint and how to continue
    progress = Progress(0, 3, 10, global_step=20, epochs_done=2)
    progress.epoch_step = 10
    cp = Checkpointer(store, progress, {"progress": progress}, "acc", "max")
    cp.model = type("M", (), {"network": net, "_optimizer": opt})()
    with pytest.raises(UserError, match=r"could not write checkpoint .*latest \(No space left on device\).*--resume"):
        cp.on_epoch_end(1)
    monkeypatch.setattr(paddle, "save", real)
    assert verify(store.prefix("latest")) is None and stamps(store.prefix("latest")) == old


KILLED_WRITER = r"""
import sys
import paddle
sys.path.insert(0, sys.argv[2])
from utils.training.checkpoint import CheckpointStore
net = paddle.nn.Linear(64, 64)
opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=net.parameters())
net(paddle.ones([1, 64])).sum().backward()
opt.step()
store = CheckpointStore(sys.argv[1])
i = 0
print("ready", flush=True)
while True:
    i += 1
    for p in net.parameters():
        p.set_value(paddle.full(p.shape, float(i)))
    for v in opt._accumulators.values():
        for t in v.values():
            t.set_value(paddle.full(t.shape, float(i)))
    store.save("latest", net, opt, {"progress": {"global_step": i}})
"""


def test_real_kills_leave_latest_whole_and_consistent_or_absent(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    seen = []
    for delay in (0.3, 0.55, 0.8):  # a save of these files takes a few ms: the kills land at various points
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), ROOT], stdout=subprocess.PIPE, text=True,
                                env=env)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        prefix = str(tmp_path / "latest")
        reason = verify(prefix)
        if reason is None:  # whole: weights, optimizer and state all come from the same save
            w = float(paddle.load(prefix + ".pdparams")["weight"].numpy().ravel()[0])
            o = paddle.load(prefix + ".pdopt")
            vel = [float(v.numpy().ravel()[0]) for k, v in o.items() if "velocity" in k]
            assert w == vel[0] == vel[-1] == load_state(prefix)["progress"]["global_step"] >= 1
        else:
            assert "latest.pdstates is missing" in reason
        seen.append(reason is None)
        # the killed writer's temporaries go when a store opens the directory; its pid is gone
        CheckpointStore(str(tmp_path))
        assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    assert seen  # at least the checks above ran on every kill


def test_stale_temporaries_are_removed_live_ones_kept(tmp_path):
    store, net, opt = small_store(tmp_path)
    fill(net, opt, 1.0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    old_live = tmp_path / "epoch_1.pdparams.tmp1"  # pid 1 is alive, but this file is older than the checkpoint
    old_live.write_bytes(b"x")
    os.utime(old_live, (time.time() - 3600, time.time() - 3600))
    store.save("latest", net, opt, {"progress": {"global_step": 1}})
    (tmp_path / f"latest.pdparams.tmp{dead_pid}").write_bytes(b"x")
    (tmp_path / f"metrics.json.tmp{dead_pid}").write_text("{")
    live = tmp_path / f"latest.pdopt.tmp{os.getpid()}"  # a writer at work in this process: newer, alive
    live.write_bytes(b"x")
    (tmp_path / "notes.tmp").write_text("not ours")  # no pid: not a temporary of ours
    removed = CheckpointStore(str(tmp_path)).removed
    assert sorted(removed) == sorted(["epoch_1.pdparams.tmp1", f"latest.pdparams.tmp{dead_pid}",
                                      f"metrics.json.tmp{dead_pid}"])
    assert live.exists() and (tmp_path / "notes.tmp").exists()
    assert remove_stale_temporaries(str(tmp_path / "absent")) == []


def test_strict_json_nulls_non_finite_and_reports_where(tmp_path):
    obj = {"loss": float("nan"), "history": [{"acc": 0.5, "loss": float("inf")}, {"loss": 1.0}],
           "best": {"loss": np.float32("-inf"), "n": np.int64(3), "ok": np.bool_(True)}, "arr": np.array([1.0, np.nan]),
           "tuple": (1, 2), 5: "int key"}
    path = str(tmp_path / "m.json")
    nulled = save_json(obj, path)
    assert nulled == ["loss", "history[0].loss", "best.loss", "arr[1]"]
    text = open(path).read()

    def refuse(name):
        raise AssertionError(f"non-JSON constant {name}")
    data = json.loads(text, parse_constant=refuse)
    assert data["loss"] is None and data["history"][0] == {"acc": 0.5, "loss": None}
    assert data["best"] == {"loss": None, "n": 3, "ok": True} and data["arr"] == [1.0, None] and data["5"] == "int key"
    json.dumps(data, allow_nan=False)
    # checkpoint states too: a NaN best metric is null, and the checkpoint stays whole
    store, net, opt = small_store(tmp_path)
    nulled = store.save("latest", net, opt, {"checkpointer": {"best_metrics": {"loss": float("nan")}}})
    assert nulled == ["checkpointer.best_metrics.loss"]
    state = json.loads(open(tmp_path / "latest.pdstates").read(), parse_constant=refuse)
    assert state["checkpointer"]["best_metrics"]["loss"] is None and verify(store.prefix("latest")) is None
    assert not [v for v in state["files"].values() if not math.isfinite(v["size"])]


def test_ema_style_checkpoints_without_optimizer(tmp_path):
    store, net, opt = small_store(tmp_path)
    store.save("latest", net, opt, {"progress": {"global_step": 1}})
    store.save("latest", net, None, {"ema": {"updates": 1}})  # a save without optimizer drops the old .pdopt
    assert not os.path.exists(tmp_path / "latest.pdopt")
    assert verify(store.prefix("latest"), optimizer=False) is None
    assert verify(store.prefix("latest")) == "latest was saved without optimizer state"
    with pytest.raises(ValueError, match="reserved"):
        store.save("x", net, opt, {"files": 1})


# ---- end-to-end through the spine (append to tests/test_checkpoint_integrity.py once utils/trainer.py calls
# ---- resolve_resume / check_best / restore_best)
def resume_run(run, *overrides):
    lines = []
    cfg = load_config(os.path.join(run, "config.yml"), ["Global.verbose=0", "Global.epochs=3", *overrides])
    cfg["Global"]["checkpoints"] = run
    return train(cfg, print_fn=lambda *a: lines.append(" ".join(map(str, a)))), lines


def test_resume_with_a_missing_optimizer_falls_back_not_restarts(run):
    per_epoch = steps(run, "epoch_1")
    damage(os.path.join(run, "latest.pdopt"), "missing")
    m, lines = resume_run(run)
    warned = [ln for ln in lines if ln.startswith("warning:") and "latest.pdopt is missing" in ln]
    assert len(warned) == 1 and "resuming from epoch_2" in warned[0]
    assert m["global_step"] == 3 * per_epoch  # continued after epoch 2, did not restart at epoch 1


def test_resume_finds_a_damaged_best_model_at_once_and_still_writes_metrics(run):
    damage(os.path.join(run, "best_model.pdparams"), "truncated")
    m, lines = resume_run(run, "Checkpoint.save_best=false")  # the damaged file stays to the end
    assert [ln for ln in lines if "best_model is damaged" in ln and "replaces it" in ln]
    assert [ln for ln in lines if "not restored" in ln] and not m["restored_best_weights"]
    assert os.path.exists(os.path.join(run, "metrics.json"))


def test_train_tool_resume_with_no_whole_checkpoint_is_one_line(run):
    for f in os.listdir(run):
        if f.startswith(("epoch_", "best_model")):
            os.remove(os.path.join(run, f))
    damage(os.path.join(run, "latest.pdstates"), "empty")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "tools/train.py", "--resume", run], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300)
    assert_user_error(proc, "no whole checkpoint to resume from", "latest.pdstates is empty")
