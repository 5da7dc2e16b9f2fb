"""EMA of the weights (utils/addons/ema.py) and mixed precision settings (utils/addons/amp.py)."""
import json
import os
from types import SimpleNamespace

import numpy as np
import paddle
import pytest

from utils.addons.amp import amp_configs_for
from utils.addons.ema import EMACallback, ModelEMA, warmup_decay
from utils.config import load_config
from utils.errors import ConfigError, UserError
from utils.trainer import train
from utils.training.callbacks import Progress
from utils.training.checkpoint import CheckpointStore
from utils.training.checkpointer import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cfg_for(tmp_path, *overrides, config="configs/cnn_digits.yml"):
    return load_config(os.path.join(ROOT, config), [f"Global.output_dir={tmp_path}", "Global.verbose=0", *overrides])


def quiet(*a, **k):
    pass


def arrays(state):
    return {k: np.array(v.numpy()) for k, v in state.items()}


def small_net():
    paddle.seed(0)
    return paddle.nn.Sequential(paddle.nn.Conv2D(1, 4, 3), paddle.nn.BatchNorm2D(4), paddle.nn.ReLU(),
                                paddle.nn.Flatten(), paddle.nn.Linear(4 * 6 * 6, 3))


def set_constant(net, value):
    with paddle.no_grad():
        for p in net.state_dict().values():
            p.set_value(paddle.full(p.shape, value, p.dtype))


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_closed_form_with_constant_weights(warmup):
    net = small_net()
    s0 = arrays(net.state_dict())
    ema = ModelEMA(net, decay=0.9, warmup=warmup)
    set_constant(net, 0.5)
    decays = []
    for _ in range(7):
        decays.append(ema.current_decay())
        ema.update()
    expected_decays = [min(0.9, (1 + n) / (10 + n)) if warmup else 0.9 for n in range(7)]
    assert decays == pytest.approx(expected_decays)
    assert decays == [warmup_decay(0.9, n, warmup) for n in range(7)]
    factor = float(np.prod(expected_decays))  # shadow_k = w + prod(d_n) * (shadow_0 - w)
    for k, s in ema.shadow.items():
        np.testing.assert_allclose(s.numpy(), 0.5 + factor * (s0[k] - 0.5), rtol=1e-5, atol=1e-6, err_msg=k)
    assert ema.updates == 7
    assert set(ema.shadow) == set(s0)  # BatchNorm _mean/_variance are averaged too
    assert any(k.endswith("_mean") for k in ema.shadow) and any(k.endswith("_variance") for k in ema.shadow)


def test_warmup_decay_sequence():
    assert [round(warmup_decay(0.999, n), 6) for n in range(3)] == [0.1, round(2 / 11, 6), 0.25]
    assert warmup_decay(0.5, 100) == 0.5 and warmup_decay(0.999, 5, warmup=False) == 0.999


def test_apply_to_swaps_and_restores_bit_exactly_including_batchnorm_stats():
    net = small_net()
    ema = ModelEMA(net, decay=0.8)
    net.train()
    for i in range(3):  # change weights and BN running statistics, then average
        net(paddle.randn([8, 1, 8, 8]))
        with paddle.no_grad():
            for p in net.parameters():
                if not p.stop_gradient:
                    p.set_value(p + 0.01 * (i + 1))
        ema.update()
    raw = arrays(net.state_dict())
    assert not np.array_equal(raw["1._mean"], ema.shadow["1._mean"].numpy())
    with ema.apply_to() as swapped:
        inside = arrays(swapped.state_dict())
    for k in raw:
        np.testing.assert_array_equal(inside[k], ema.shadow[k].numpy(), err_msg=k)
        np.testing.assert_array_equal(net.state_dict()[k].numpy(), raw[k], err_msg=k)
    with pytest.raises(RuntimeError):  # restored on an exception too
        with ema.apply_to():
            raise RuntimeError("boom")
    for k in raw:
        np.testing.assert_array_equal(net.state_dict()[k].numpy(), raw[k], err_msg=k)


def test_a_constant_tensor_stays_bit_exact_and_state_round_trips():
    net = small_net()
    w0 = net[4].bias.numpy().copy()
    ema = ModelEMA(net, decay=0.999)
    for _ in range(50):
        ema.update()
    np.testing.assert_array_equal(ema.shadow["4.bias"].numpy(), w0)
    other = ModelEMA(small_net(), decay=0.999)
    other.load_state_dict(ema.state_dict(), updates=ema.updates)
    assert other.updates == 50
    for k in ema.shadow:
        np.testing.assert_array_equal(other.shadow[k].numpy(), ema.shadow[k].numpy())


def test_decay_is_checked(tmp_path):
    for bad in ("EMA.decay=1.0", "EMA.decay=0", "EMA.decay=-0.5"):
        with pytest.raises(ConfigError, match=r"EMA.decay must be in \(0, 1\)"):
            cfg_for(tmp_path, bad)
    with pytest.raises(ConfigError, match="EMA.every_iters"):
        cfg_for(tmp_path, "EMA.every_iters=0")
    with pytest.raises(ConfigError):
        ModelEMA(small_net(), decay=1.5)


def test_best_model_takes_the_better_weights(tmp_path):
    net = small_net()
    ema_cb = EMACallback(ModelEMA(net, decay=0.5), every_iters=1)
    set_constant(net, 1.0)
    ema_cb.ema.update()  # shadow: halfway to 1.0
    store = CheckpointStore(str(tmp_path))
    progress = Progress(0, 3, 10, global_step=10)
    ck = ema_cb.attach(Checkpointer(store, progress, {"progress": progress}, "acc", "max"))
    ck.model = SimpleNamespace(network=net, _optimizer=None)
    raw = arrays(net.state_dict())
    ck.on_eval_end({"loss": 0.5, "acc": 0.90, "ema_loss": 0.4, "ema_acc": 0.95, "epoch": 1, "step": 10})
    assert ck.best_metrics["weights"] == "ema" and ck.best_metrics["acc"] == 0.95
    assert ck.best_metrics["raw_acc"] == 0.90 and ck.best_metrics["loss"] == 0.4
    saved = paddle.load(str(tmp_path / "best_model.pdparams"))
    for k, s in ema_cb.ema.shadow.items():
        np.testing.assert_array_equal(saved[k].numpy(), s.numpy(), err_msg=k)
        np.testing.assert_array_equal(net.state_dict()[k].numpy(), raw[k], err_msg=k)  # raw weights back
    ck.on_eval_end({"loss": 0.3, "acc": 0.97, "ema_loss": 0.35, "ema_acc": 0.96, "epoch": 2, "step": 20})
    assert ck.best_metrics["weights"] == "raw" and ck.best_metrics["acc"] == 0.97
    saved = paddle.load(str(tmp_path / "best_model.pdparams"))
    for k in raw:
        np.testing.assert_array_equal(saved[k].numpy(), raw[k], err_msg=k)
    ck.on_eval_end({"loss": 0.3, "acc": 0.5, "ema_loss": 0.35, "ema_acc": 0.6, "epoch": 3, "step": 30})
    assert ck.best_metrics["epoch"] == 2  # neither improves
    ck._save("latest")  # the averages go beside latest, with their count
    assert json.load(open(tmp_path / "ema.pdstates"))["ema"]["updates"] == 1
    assert json.load(open(tmp_path / "latest.pdstates"))["ema"]["updates"] == 1


def test_amp_configs_for_cpu_and_a_gpu():
    cfg = {"AMP": {"level": None, "scale_loss": 1024.0, "use_dynamic_loss_scaling": True,
                   "custom_white_list": [], "custom_black_list": ["reduce_mean"]},
           "Optimizer": {"grad_clip": None}}
    assert amp_configs_for(cfg, "gpu") == (None, None)
    cfg["AMP"]["level"] = "O1"
    configs, warning = amp_configs_for(cfg, "cpu")
    assert configs is None
    assert warning == "AMP.level O1 ignored: Paddle's mixed precision needs a GPU (running in float32)"
    for level in ("O1", "O2"):
        cfg["AMP"]["level"] = level
        configs, warning = amp_configs_for(cfg, "gpu")
        assert warning is None
        assert configs == {"level": level, "init_loss_scaling": 1024.0, "use_dynamic_loss_scaling": True,
                           "custom_black_list": ["reduce_mean"]}
        # hapi accepts exactly these keys (Model._prepare_amp checks them; no GPU needed to prepare)
        net = small_net()
        model = paddle.Model(net)
        model.prepare(paddle.optimizer.SGD(parameters=net.parameters()), paddle.nn.CrossEntropyLoss(),
                      amp_configs=configs)
        assert model._adapter._amp_level == level
        assert model._adapter._amp_configs == {"init_loss_scaling": 1024.0, "use_dynamic_loss_scaling": True}
        assert model._adapter._amp_custom_lists == {"custom_black_list": ["reduce_mean"]}
    cfg["Optimizer"]["grad_clip"] = "value"
    with pytest.raises(UserError, match="O2 supports only norm clipping"):
        amp_configs_for(cfg, "gpu")


class Interrupt(Exception):
    pass


def test_training_with_ema_and_amp_on_cpu_then_resume_continues_the_average(tmp_path):
    extra = ["Global.epochs=3", "Data.fraction=0.5", "EMA.enable=true", "EMA.decay=0.9", "AMP.level=O1",
             "EarlyStopping.patience=50", "VisualDL.histograms_every_epochs=0", "VisualDL.pr_curves=false",
             "Doctor.enable=false"]
    lines = []
    full = train(cfg_for(tmp_path, "Global.run_name=full", "Global.verbose=1", *extra), print_fn=lines.append)
    run = full["run_dir"]
    warnings = [l for l in lines if l.startswith("warning: AMP.level")]
    assert warnings == ["warning: AMP.level O1 ignored: Paddle's mixed precision needs a GPU (running in float32)"]
    assert any(l.startswith("EMA (decay 0.9): best acc raw") for l in lines)
    assert {"ema.pdparams", "ema.pdstates", "best_model.pdparams", "latest.pdparams"} <= set(os.listdir(run))
    assert len(full["history"]) == 3 and all("ema_acc" in h and "acc" in h for h in full["history"])
    best = full["best"]
    assert best["weights"] in ("ema", "raw")
    assert best["acc"] == max(best["raw_acc"], best["ema_acc"])
    assert full["ema"]["best_weights"] == best["weights"] and full["ema"]["updates"] == full["global_step"]
    saved = json.load(open(os.path.join(run, "metrics.json")))
    assert saved["best"]["weights"] == best["weights"]
    from visualdl import LogReader
    log = [f for f in os.listdir(run) if f.startswith("vdlrecords.")][0]
    tags = set(LogReader(file_path=os.path.join(run, log)).get_tags()["scalar"])
    assert {"eval/acc", "eval/loss", "eval_ema/acc", "eval_ema/loss"} <= tags

    def interrupt_at_epoch_2_eval(line):
        if "[Eval][Epoch 2/" in line and "eval_cost" in line:  # the result line of epoch 2's evaluation
            raise Interrupt(line)

    with pytest.raises(Interrupt):
        train(cfg_for(tmp_path, "Global.run_name=cut", "Global.verbose=1", *extra), print_fn=interrupt_at_epoch_2_eval)
    cut = os.path.join(str(tmp_path), "cnn_digits", "cut")
    assert json.load(open(os.path.join(cut, "ema.pdstates")))["ema"]["global_step"] == \
        json.load(open(os.path.join(cut, "latest.pdstates")))["progress"]["global_step"]
    cfg = load_config(os.path.join(cut, "config.yml"), ["Global.verbose=0"])
    cfg["Global"]["checkpoints"] = cut
    resumed = train(cfg, print_fn=quiet)
    assert resumed["global_step"] == full["global_step"]
    for name in ("ema", "latest"):
        a = paddle.load(os.path.join(run, f"{name}.pdparams"))
        b = paddle.load(os.path.join(cut, f"{name}.pdparams"))
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=f"{name}:{k}")
    assert [h["ema_acc"] for h in resumed["history"]] == [h["ema_acc"] for h in full["history"]]  # the whole run's
    assert resumed["best"] == {**full["best"], "eval_time": resumed["best"]["eval_time"]}


def test_a_damaged_ema_file_restarts_the_average_with_a_warning(tmp_path):
    extra = ["Global.epochs=2", "Data.fraction=0.3", "EMA.enable=true", "EMA.decay=0.9", "EarlyStopping.patience=50",
             "Doctor.enable=false", "VisualDL.enable=false"]
    first = train(cfg_for(tmp_path, "Global.run_name=r", *extra), print_fn=lambda *a: None)
    run = first["run_dir"]
    path = os.path.join(run, "ema.pdparams")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one bit flipped in the saved averages
    open(path, "wb").write(bytes(data))
    lines = []
    cfg = load_config(os.path.join(run, "config.yml"), ["Global.epochs=3"])
    cfg["Global"]["checkpoints"] = run
    resumed = train(cfg, print_fn=lines.append)
    warned = [ln for ln in lines if ln.startswith("warning:")]
    assert warned == [f"warning: {run}/ema: ema.pdparams does not match its checksum (damaged): "
                      "the EMA starts from the resumed weights"]
    assert resumed["epochs_run"] == 3 and resumed["ema"]["updates"] == resumed["global_step"] - first["global_step"]
