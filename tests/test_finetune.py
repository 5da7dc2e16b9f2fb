"""Fine-tuning: the pretrained-weights report, freezing (bit-identical, BatchNorm buffers too),
per-parameter LR multipliers (exact update sizes), the two-stage schedule with resume, the
paddle.vision backbones' pretrained weights (local file; ImageNet download forced to fail)."""
import os

import numpy as np
import paddle
import pytest

from models import build_model
from models.pretrained import load_matching
from utils.addons.finetune import TwoStage
from utils.addons.finetune_plan import FineTunePlan, apply_freeze, apply_lr_mult, select
from utils.config import load_config, validate
from utils.errors import ConfigError, UserError
from utils.trainer import train
from utils.training.optim import build_lr_scheduler, build_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CNN_BODY = ["stages.0", "stages.1", "stages.2"]


def quiet(*a, **k):
    pass


def cfg_for(tmp_path, *overrides, config="configs/cnn_digits.yml"):
    return load_config(os.path.join(ROOT, config),
                       [f"Global.output_dir={tmp_path}", "Global.verbose=0", "VisualDL.enable=false",
                        "Doctor.enable=false", "Data.fraction=0.4", *overrides])


def saved_cnn(tmp_path, num_classes=10, seed=0):
    """A cnn for digits saved as a .pdparams file: the 'pretrained model' of the tests."""
    paddle.seed(seed)
    net = build_model("cnn", num_classes=num_classes, in_channels=1, image_size=8)
    # Running statistics away from their 0/1 init, so an update of them would show.
    for layer in net.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            layer._mean.set_value(paddle.full(layer._mean.shape, 0.01))
            layer._variance.set_value(paddle.full(layer._variance.shape, 1.1))
    path = str(tmp_path / f"cnn{num_classes}.pdparams")
    paddle.save(net.state_dict(), path)
    return path, {k: v.numpy().copy() for k, v in net.state_dict().items()}


def weights(prefix):
    return {k: v.numpy() for k, v in paddle.load(prefix + ".pdparams").items()}


# ----------------------------------------------------------------------------- LR multipliers

def tiny():
    paddle.seed(1)
    net = paddle.nn.Sequential(paddle.nn.Linear(2, 2), paddle.nn.Linear(2, 1))
    net[0].weight.set_value(np.array([[0.5, -0.25], [0.25, 1.0]], "float32"))
    net[1].weight.set_value(np.array([[1.0], [-0.5]], "float32"))
    return net


def step(net, opt):
    before = {n: p.numpy().copy() for n, p in net.named_parameters()}
    net(paddle.to_tensor([[1.0, 2.0]])).sum().backward()
    grads = {n: p.grad.numpy().copy() for n, p in net.named_parameters()}
    opt.step()
    opt.clear_grad()
    return grads, {n: p.numpy() - before[n] for n, p in net.named_parameters()}


@pytest.mark.parametrize("name", ["SGD", "Momentum", "Adam", "AdamW"])
def test_lr_mult_scales_the_update(name):
    cfg = validate({"Optimizer": {"name": name, "lr": 0.5, "weight_decay": 0.0}, "LRScheduler": {"name": "constant"}})
    ref, net = tiny(), tiny()
    mult = apply_lr_mult(net, {"0.weight": 0.25, "0": 0.5, "1.bias": 0})  # first match wins
    assert mult == {"0.weight": 0.25, "0.bias": 0.5, "1.bias": 0.0}
    o_ref = build_optimizer(cfg, ref.parameters(), build_lr_scheduler(cfg, 10, 1))
    o_net = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 10, 1))
    g, d_ref = step(ref, o_ref)
    _, d = step(net, o_net)
    if name == "SGD":  # exactly lr * mult * grad, bit for bit (powers of two)
        np.testing.assert_array_equal(d["0.weight"], -0.5 * 0.25 * g["0.weight"])
        np.testing.assert_array_equal(d["0.bias"], -0.5 * 0.5 * g["0.bias"])
    # first step of every optimizer: the update is the multiplier times the plain one
    np.testing.assert_allclose(d["0.weight"], 0.25 * d_ref["0.weight"], rtol=1e-6)
    np.testing.assert_allclose(d["0.bias"], 0.5 * d_ref["0.bias"], rtol=1e-6)
    np.testing.assert_array_equal(d["1.weight"], d_ref["1.weight"])
    np.testing.assert_array_equal(d["1.bias"], 0.0)
    # read at every step: a change mid-run takes effect at the next one
    net[1].weight.optimize_attr["learning_rate"] = 0.0
    _, d = step(net, o_net)
    np.testing.assert_array_equal(d["1.weight"], 0.0)


@pytest.mark.parametrize("name", ["Momentum", "AdamW"])
def test_frozen_and_zero_mult_do_not_move_under_weight_decay(name):
    cfg = validate({"Optimizer": {"name": name, "lr": 0.5, "weight_decay": 0.1}, "LRScheduler": {"name": "constant"}})
    net = tiny()
    w0 = {n: p.numpy().copy() for n, p in net.named_parameters()}
    apply_freeze(net, ["0.weight"])
    apply_lr_mult(net, {"1.weight": 0})
    opt = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 10, 1))
    for _ in range(3):
        net(paddle.to_tensor([[1.0, 2.0]])).sum().backward()
        opt.step()
        opt.clear_grad()
    after = {n: p.numpy() for n, p in net.named_parameters()}
    np.testing.assert_array_equal(after["0.weight"], w0["0.weight"])
    np.testing.assert_array_equal(after["1.weight"], w0["1.weight"])
    assert not np.array_equal(after["0.bias"], w0["0.bias"])


def test_patterns_prefix_glob_regex_and_errors():
    names = ["conv1.weight", "layer1.0.conv1.weight", "layer10.weight", "fc.weight", "fc.bias"]
    assert select(["layer1"], names, "k") == ["layer1.0.conv1.weight"]  # a layer, not layer10
    assert select(["*conv1*"], names, "k") == ["conv1.weight", "layer1.0.conv1.weight"]
    assert select(["re:^fc\\.", "conv1"], names, "k") == ["conv1.weight", "fc.weight", "fc.bias"]
    with pytest.raises(ConfigError) as e:
        select(["layer9"], names, "FineTune.freeze")
    msg = str(e.value)
    assert "\n" not in msg and "FineTune.freeze" in msg and "'layer9'" in msg and "conv1.weight" in msg
    net = tiny()
    with pytest.raises(ConfigError, match="only matches parameters that earlier patterns took"):
        apply_lr_mult(net, {"*": 0.1, "0.weight": 0.5})
    with pytest.raises(ConfigError, match="number >= 0"):
        apply_lr_mult(net, {"0": -1})
    with pytest.raises(ConfigError, match="bad regular expression"):
        select(["re:("], names, "k")


# ----------------------------------------------------------------------------- freezing, end to end

@pytest.mark.parametrize("opt", ["Momentum", "AdamW"])
def test_frozen_body_bit_identical_after_fit_head_changed(tmp_path, opt):
    path, w0 = saved_cnn(tmp_path)
    m = train(cfg_for(tmp_path, "Global.epochs=2", f"Global.pretrained_model={path}", f"Optimizer.name={opt}",
                      "Optimizer.weight_decay=0.01", f"FineTune.freeze={CNN_BODY}", f"Global.run_name={opt}"),
              print_fn=quiet)
    w = weights(os.path.join(m["run_dir"], "latest"))
    body = [k for k in w if k.startswith("stages.")]
    assert any(k.endswith("._mean") for k in body) and any(k.endswith("._variance") for k in body)
    for k in body:  # weights and BatchNorm running statistics
        np.testing.assert_array_equal(w[k], w0[k], err_msg=k)
    for k in ("head.weight", "head.bias"):
        assert not np.array_equal(w[k], w0[k]), k


def test_frozen_bn_stats_move_without_freeze_bn():
    net = build_model("cnn", in_channels=1, image_size=8)
    bn = net.stages[0].convs[0][1]
    apply_freeze(net, CNN_BODY, freeze_bn=False)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(0.1, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    mean0 = bn._mean.numpy().copy()
    model.train_batch([np.random.rand(8, 1, 8, 8).astype("float32")], [np.zeros((8, 1), "int64")])
    assert not np.array_equal(bn._mean.numpy(), mean0)  # hence FineTune.freeze_bn (default true)


# ----------------------------------------------------------------------------- pretrained report

def test_head_replacement_reports_mismatch_by_name_and_shape_and_trains(tmp_path):
    path, w0 = saved_cnn(tmp_path, num_classes=7)
    lines = []
    m = train(cfg_for(tmp_path, "Global.epochs=1", f"Global.pretrained_model={path}", "Global.verbose=2"),
              print_fn=lines.append)
    summary = [l for l in lines if l.startswith("pretrained:")]
    assert len(summary) == 1 and "loaded 30/32 tensors" in summary[0] and "head.weight, head.bias" in summary[0]
    assert "  shape mismatch  head.bias: checkpoint [7] vs model [10]" in lines
    assert "  shape mismatch  head.weight: checkpoint [128, 7] vs model [128, 10]" in lines
    assert m["best"]["acc"] > 0.3
    # missing / unexpected, by name
    state = paddle.load(path)
    state["extra.weight"] = state.pop("stages.2.convs.1.0.weight")
    paddle.save(state, str(tmp_path / "renamed.pdparams"))
    net = build_model("cnn", num_classes=7, in_channels=1, image_size=8)
    rep = load_matching(net, str(tmp_path / "renamed"))
    assert rep.missing == ["stages.2.convs.1.0.weight"] and rep.unexpected == ["extra.weight"]
    assert not rep.mismatched and len(rep.loaded) == 31
    loaded, skipped = rep  # the old (loaded, skipped) unpacking still works
    assert skipped == ["stages.2.convs.1.0.weight (not in the checkpoint)"]
    np.testing.assert_array_equal(net.state_dict()["head.bias"].numpy(), w0["head.bias"])


def test_pretrained_errors_are_one_line(tmp_path):
    net = build_model("cnn", in_channels=1, image_size=8)
    with pytest.raises(UserError) as e:
        load_matching(net, str(tmp_path / "nope"))
    assert "Global.pretrained_model: file not found" in str(e.value) and "\n" not in str(e.value)
    paddle.save(build_model("mlp", num_classes=3, in_channels=1, image_size=8).state_dict(), str(tmp_path / "mlp.pdparams"))
    with pytest.raises(UserError) as e:
        load_matching(net, str(tmp_path / "mlp.pdparams"))
    msg = str(e.value)
    assert "none of the" in msg and "another Arch.name" in msg and "\n" not in msg


# ----------------------------------------------------------------------------- two stages

def test_two_stage_switches_at_the_right_epoch_and_survives_resume(tmp_path):
    path, w0 = saved_cnn(tmp_path)
    common = ["Global.epochs=3", f"Global.pretrained_model={path}", "FineTune.head_epochs=1",
              "FineTune.body_lr_mult=0.5", "Global.verbose=1"]
    lines = []
    full = train(cfg_for(tmp_path, "Global.run_name=full", *common), print_fn=lines.append)
    assert any("two-stage: epochs 1-1 train the head only (2 tensors: head.weight, head.bias)" in l for l in lines)
    switch = [i for i, l in enumerate(lines) if l.startswith("fine-tune: epoch 2: stage 2")]
    evals = [i for i, l in enumerate(lines) if "[Eval][Epoch" in l and "eval_cost" in l]
    assert len(switch) == 1 and evals[0] < switch[0] < evals[1]  # after epoch 1's eval, before epoch 2's

    class Interrupt(Exception):
        pass

    def stop_at_switch(line):
        if line.startswith("fine-tune: epoch 2"):
            raise Interrupt(line)

    with pytest.raises(Interrupt):
        train(cfg_for(tmp_path, "Global.run_name=cut", *common), print_fn=stop_at_switch)
    run = os.path.join(str(tmp_path), "cnn_digits", "cut")
    after_stage1 = weights(os.path.join(run, "latest"))
    for k, v in after_stage1.items():  # stage 1 moved the head only; frozen BN kept its statistics
        assert np.array_equal(v, w0[k]) == k.startswith("stages."), k
    cfg = load_config(os.path.join(run, "config.yml"), ["Global.verbose=0"])
    cfg["Global"]["checkpoints"] = run
    resumed = train(cfg, print_fn=quiet)  # resumes at the switch: the body trains from its first step
    a, b = weights(os.path.join(full["run_dir"], "latest")), weights(os.path.join(run, "latest"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert resumed["global_step"] == full["global_step"]


def test_two_stage_callback_state_and_late_start():
    net = build_model("cnn", in_channels=1, image_size=8)
    plan = FineTunePlan(net, head_epochs=2, body_lr_mult=0.1)
    cb = TwoStage(plan, start_epoch=3, print_fn=quiet)  # resumed after the switch
    cb.on_train_begin()
    body = dict(net.named_parameters())["stages.0.convs.0.0.weight"]
    assert plan.stage == 2 and not body.stop_gradient and body.optimize_attr["learning_rate"] == pytest.approx(0.1)
    cb.load_state_dict({"stage": 1, "epochs_done": 1})
    assert plan.stage == 1 and body.stop_gradient and net.stages[0].convs[0][1]._use_global_stats is True
    cb.on_epoch_begin(1)  # global epoch 2: the switch
    assert plan.stage == 2 and net.stages[0].convs[0][1]._use_global_stats is None
    cb.on_epoch_end(1)
    assert cb.state_dict() == {"stage": 2, "epochs_done": 3}
    # multi-process: stage 1 holds the body with multiplier 0 (DataParallel syncs only trainable params)
    plan = FineTunePlan(net, head_epochs=2, hold_with_zero_lr=True).apply(1)
    assert not body.stop_gradient and body.optimize_attr["learning_rate"] == 0.0
    assert net.stages[0].convs[0][1]._use_global_stats is True


# ----------------------------------------------------------------------------- paddle.vision backbones

def test_vision_local_pretrained_file_adapts_stem_and_skips_head(tmp_path):
    from paddle.vision.models import mobilenet_v2, resnet18

    paddle.save(mobilenet_v2(num_classes=1000).state_dict(), str(tmp_path / "mbv2.pdparams"))
    ref = paddle.load(str(tmp_path / "mbv2.pdparams"))
    m = build_model("mobilenet_v2", num_classes=5, in_channels=1, image_size=8,
                    pretrained=str(tmp_path / "mbv2.pdparams"), init="kaiming")
    rep = m.pretrained_report
    assert [n for n, _, _ in rep.mismatched] == ["classifier.1.weight", "classifier.1.bias"] and not rep.missing
    own = m.state_dict()
    np.testing.assert_allclose(own["features.0.0.weight"].numpy(),  # 1 channel: the sum over RGB
                               ref["features.0.0.weight"].numpy().sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(own["features.5.conv.1.0.weight"].numpy(),  # Arch.init did not overwrite it
                                  ref["features.5.conv.1.0.weight"].numpy())

    paddle.save(resnet18(num_classes=1000).state_dict(), str(tmp_path / "r18.pdparams"))
    m = build_model("resnet18", num_classes=10, in_channels=3, image_size=32, pretrained=str(tmp_path / "r18"))
    assert "conv1.weight: checkpoint [64, 3, 7, 7] vs model [64, 3, 3, 3]" in m.pretrained_report.skipped
    assert len(m.pretrained_report.loaded) == len(m.state_dict()) - 3


def test_vision_imagenet_offline_is_one_line_error(tmp_path, monkeypatch):
    import paddle.utils.download as download

    def offline(url, md5sum=None):
        raise RuntimeError(f"Download from {url} failed. Retry limit reached")

    monkeypatch.setattr(download, "get_weights_path_from_url", offline)
    for value in ("imagenet", True):
        with pytest.raises(UserError) as e:
            build_model("resnet18", pretrained=value)
        msg = str(e.value)
        assert "\n" not in msg and "needs internet" in msg and "Arch.pretrained=path/to/resnet18.pdparams" in msg
    # online (here: the download mechanism hands back a file): Paddle's weights load by name and shape
    from paddle.vision.models import mobilenet_v2

    paddle.save(mobilenet_v2(num_classes=1000).state_dict(), str(tmp_path / "mobilenet_v2_x1.0.pdparams"))
    urls = []
    monkeypatch.setattr(download, "get_weights_path_from_url",
                        lambda url, md5sum=None: urls.append(url) or str(tmp_path / "mobilenet_v2_x1.0.pdparams"))
    m = build_model("mobilenet_v2", pretrained="imagenet")
    assert urls == ["https://paddle-hapi.bj.bcebos.com/models/mobilenet_v2_x1.0.pdparams"]
    assert len(m.pretrained_report.loaded) == len(m.state_dict()) - 2


def test_finetune_config_keys_and_shipped_example():
    cfg = load_config(os.path.join(ROOT, "configs", "finetune_digits.yml"))
    assert cfg["FineTune"]["head_epochs"] == 2 and cfg["Arch"]["name"] == "resnet18"
    with pytest.raises(ConfigError, match="FineTune.lr_mult"):
        validate({"FineTune": {"lr_mult": [1, 2]}})
    with pytest.raises(ConfigError, match="did you mean 'head_epochs'"):
        validate({"FineTune": {"head_epoch": 2}})
