"""The fast CIFAR recipe's parts: the fastnet model (whitening from data, identity init), the data-dependent
init hook of the trainer, Optimizer.param_groups (LR and decay multipliers) and the linear one-cycle."""
import numpy as np
import paddle
import pytest

from models import build_model
from models.fastnet import ConvGroup, ShiftNorm, Whitening, dirac_
from models.init import data_init_layers
from utils.config import load_config, validate
from utils.config.patterns import check_param_groups
from utils.errors import ConfigError
from utils.training.optim import build_lr_scheduler, build_optimizer
from utils.training.param_groups import apply_param_groups

# ------------------------------------------------------------------------- the model


def correlated_images(n=64, seed=0):
    """Images whose channels and neighbouring pixels are strongly correlated (as photos are)."""
    rs = np.random.RandomState(seed)
    x = rs.randn(n, 3, 16, 16)
    x[:, 1] = 0.9 * x[:, 0] + 0.1 * x[:, 1]
    x = np.cumsum(x, axis=3) / 4.0
    return x.astype(np.float32)


def test_whitening_gives_unit_decorrelated_patches():
    x = correlated_images()
    w = Whitening(3, 2, eps=1e-8)
    w.init_from_data(x)
    out = w(paddle.to_tensor(x)).numpy()
    assert out.shape == (64, 24, 15, 15)
    half = out[:, :12].transpose(1, 0, 2, 3).reshape(12, -1)
    cov = half @ half.T / half.shape[1]
    # the patches are not centred (the inputs are not zero-mean per pixel), so allow the mean's share
    mean = half.mean(axis=1)
    np.testing.assert_allclose(cov - np.outer(mean, mean), np.eye(12), atol=0.05)
    np.testing.assert_array_equal(out[:, 12:], -out[:, :12])  # both signs: GELU keeps the information
    assert w.conv.weight.stop_gradient and not w.conv.bias.stop_gradient


def test_whitening_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="expects 3 channels"):
        Whitening(3, 2).init_from_data(np.zeros((2, 1, 8, 8), np.float32))


def test_dirac_init_passes_the_first_channels_through():
    conv = paddle.nn.Conv2D(4, 6, 3, padding=1, bias_attr=False)
    dirac_(conv.weight)
    x = paddle.randn([2, 4, 5, 5])
    y = conv(x).numpy()
    np.testing.assert_allclose(y[:, :4], x.numpy(), atol=1e-6)
    assert np.abs(y[:, 4:]).max() > 0  # the extra filters keep their random init


def test_conv_group_init_weights_applies_identity_to_both_convs():
    g = ConvGroup(8, 16)
    g.init_weights()
    for conv in (g.conv1, g.conv2):
        w = conv.weight.numpy()
        n = w.shape[1]
        assert np.all(w[np.arange(n), np.arange(n), 1, 1] == 1.0)
        assert np.count_nonzero(w[:n]) == n


@pytest.mark.parametrize("name,widths,params", [("fastnet", (64, 128, 128), 568_728),
                                                 ("fastnet_wide", (64, 256, 256), 1_971_352)])
def test_fastnet_shapes_and_trainable_count(name, widths, params):
    net = build_model(name, num_classes=10, in_channels=3, image_size=32)
    out = net(paddle.randn([2, 3, 32, 32]))
    assert out.shape == [2, 10]
    trainable = sum(int(p.numel()) for p in net.parameters() if not p.stop_gradient)
    assert trainable == params
    # BatchNorm: only the shift trains (its scale is fixed at 1)
    for layer in net.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            assert layer.weight is None and layer.bias is None  # ShiftNorm adds its own shift
    assert [type(layer).__name__ for layer in data_init_layers(net)] == ["Whitening"]


def test_shift_norm_trains_its_shift():
    # Paddle's own BatchNorm with a frozen or absent scale gives the shift no gradient
    norm = ShiftNorm(4)
    x = paddle.randn([3, 4, 5, 5])
    (norm(x) * paddle.arange(4, dtype="float32").reshape([1, 4, 1, 1])).sum().backward()
    np.testing.assert_allclose(norm.bias.grad.numpy(), 75.0 * np.arange(4), rtol=1e-6)


def test_fastnet_too_small_input_is_a_clear_error():
    from utils.errors import ConfigError as CE
    with pytest.raises(CE, match="too small for fastnet"):
        build_model("fastnet", num_classes=10, in_channels=1, image_size=8)


def test_trainer_initialises_whitening_from_the_training_images(tmp_path):
    from utils.data.synthetic import make_cifar_tarball
    from utils.trainer import train

    tar = make_cifar_tarball(str(tmp_path / "cifar-10-python.tar.gz"), n_train=300, n_test=20)
    lines = []
    cfg = load_config("configs/fast_cifar10.yml", [f"Data.data_dir={tar}", "Global.epochs=1",
                                                  f"Global.output_dir={tmp_path}", "VisualDL.enable=false",
                                                  "Doctor.enable=false", "DataLoader.batch_size=64"])
    m = train(cfg, print_fn=lines.append)
    assert any("initialised the data-dependent layers from 270 training images" in ln for ln in lines)
    assert any(ln.startswith("param group 0 (*norm*.bias): 6 tensors, 640 values, lr x64") for ln in lines)
    assert np.isfinite(m["final"]["loss"])


# ------------------------------------------------------------------------- Optimizer.param_groups

class TwoLayer(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(2, 2)
        self.norm = paddle.nn.BatchNorm1D(2)

    def forward(self, x):
        return self.norm(self.fc(x))


def opt_cfg(groups, name="Momentum", wd=0.1, lr=0.1):
    return validate({"Optimizer": {"name": name, "lr": lr, "momentum": 0.0, "weight_decay": wd,
                                   "param_groups": groups}, "LRScheduler": {"name": "constant"}})


def step_with_zero_grad(net, cfg):
    opt = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 1, 1))
    before = {n: p.numpy().copy() for n, p in net.named_parameters()}
    loss = sum((p * 0).sum() for p in net.parameters() if not p.stop_gradient)
    loss.backward()
    opt.step()
    return {n: p.numpy() for n, p in net.named_parameters()}, before


def test_param_groups_scale_lr_and_decay_per_parameter():
    paddle.seed(0)
    net = TwoLayer()
    net.fc.bias.set_value(np.ones(2, np.float32))
    net.norm.bias.set_value(np.ones(2, np.float32))
    cfg = opt_cfg([{"params": "norm.bias", "lr_mult": 10, "weight_decay_mult": 0.1},
                   {"params": "*.bias", "weight_decay_mult": 0}])
    lines = apply_param_groups(net, cfg["Optimizer"]["param_groups"], 0.1)
    assert lines[0].startswith("param group 0 (norm.bias): 1 tensors, 2 values, lr x10, weight decay x0.1")
    assert lines[1].startswith("param group 1 (*.bias): 1 tensors")  # norm.bias went to the first group
    after, before = step_with_zero_grad(net, cfg)
    # zero gradient: the change is the decay alone, lr * lr_mult * coefficient * w
    np.testing.assert_allclose(after["norm.bias"], 1 - 0.1 * 10 * (0.1 * 0.1), rtol=1e-6)
    np.testing.assert_array_equal(after["fc.bias"], before["fc.bias"])  # decay off
    np.testing.assert_allclose(after["fc.weight"], before["fc.weight"] * (1 - 0.1 * 0.1), rtol=1e-6)


def test_param_groups_adamw_switches_decay_off_only():
    net = TwoLayer()
    cfg = opt_cfg([{"params": "*.bias", "weight_decay_mult": 0}], name="AdamW")
    apply_param_groups(net, cfg["Optimizer"]["param_groups"], 0.1, decoupled=True)
    net.fc.bias.set_value(np.ones(2, np.float32))
    after, before = step_with_zero_grad(net, cfg)
    np.testing.assert_array_equal(after["fc.bias"], before["fc.bias"])
    assert not np.array_equal(after["fc.weight"], before["fc.weight"])
    with pytest.raises(ConfigError, match=r"weight_decay_mult: 0.5 with AdamW"):
        apply_param_groups(TwoLayer(), [{"params": "*.bias", "weight_decay_mult": 0.5}], 0.1, decoupled=True)


@pytest.mark.parametrize("groups,fragment", [
    ({"params": "x"}, "expected (a )?list"),
    (["*.bias"], "expected a mapping"),
    ([{"lr_mult": 2}], "no 'params'"),
    ([{"params": "*.bias", "lr_mul": 2}], "did you mean 'lr_mult'"),
    ([{"params": "*.bias", "lr_mult": -1}], "lr_mult: expected a finite number >= 0"),
    ([{"params": "re:(", "lr_mult": 2}], "bad regular expression"),
])
def test_param_groups_malformed_fail_at_load(groups, fragment):
    with pytest.raises(ConfigError, match=fragment):
        opt_cfg(groups)
    with pytest.raises(ConfigError, match=fragment):
        check_param_groups(groups)


def test_param_groups_pattern_matching_nothing_names_the_parameters():
    with pytest.raises(ConfigError, match=r"param_groups\[0\]\.params: pattern 'head\.\*' matches no parameter.*fc"):
        apply_param_groups(TwoLayer(), [{"params": "head.*"}], 0.1)
    with pytest.raises(ConfigError, match="only matches parameters that earlier groups took"):
        apply_param_groups(TwoLayer(), [{"params": "*"}, {"params": "fc.bias"}], 0.1)


# ------------------------------------------------------------------------- the linear one-cycle

def test_onecycle_linear_is_a_triangle():
    cfg = validate({"Optimizer": {"lr": 1.0}, "LRScheduler": {"name": "onecycle", "anneal_strategy": "linear",
                                                              "div_factor": 5, "pct_start": 0.25, "end_lr": 0.1}})
    s = build_lr_scheduler(cfg, 10, 10)  # 100 steps, peak at 25
    assert s.lr_at(0) == pytest.approx(0.2)
    assert s.lr_at(12) == pytest.approx(0.2 + 0.8 * 12 / 25)
    assert s.lr_at(25) == pytest.approx(1.0)
    assert s.lr_at(50) == pytest.approx(1.0 - 0.9 * 25 / 75)
    assert s.lr_at(100) == pytest.approx(0.1) and s.lr_at(500) == pytest.approx(0.1)
    cos = build_lr_scheduler(validate({"Optimizer": {"lr": 1.0}, "LRScheduler": {
        "name": "onecycle", "div_factor": 5, "pct_start": 0.25, "end_lr": 0.1}}), 10, 10)
    assert cos.lr_at(12) < s.lr_at(12)  # the cosine rise starts slower
    with pytest.raises(ConfigError, match="anneal_strategy"):
        validate({"LRScheduler": {"name": "onecycle", "anneal_strategy": "cosine"}})


def test_fast_config_resumes_exactly(tmp_path):
    """fast_cifar10.yml (batched data, alternating flip, whitening from the data, TTA evaluation): a run cut after
    an evaluation and resumed ends with the weights of the run that was never cut."""
    from utils.data.synthetic import make_cifar_tarball
    from utils.trainer import train

    class Cut(Exception):
        pass

    def cut_after_epoch_2(line):
        if "[Eval][Epoch 2/3]" in line and "eval_cost" in line:
            raise Cut(line)

    tar = make_cifar_tarball(str(tmp_path / "cifar-10-python.tar.gz"), n_train=300, n_test=20)
    base = [f"Data.data_dir={tar}", "Data.download=false", f"Global.output_dir={tmp_path}", "VisualDL.enable=false",
            "DataLoader.batch_size=64", "Global.eval_every_epochs=1", "Global.epochs=3"]
    straight = train(load_config("configs/fast_cifar10.yml", base + ["Global.run_name=a", "Global.verbose=0"]),
                     print_fn=lambda *a, **k: None)
    with pytest.raises(Cut):
        train(load_config("configs/fast_cifar10.yml", base + ["Global.run_name=b"]), print_fn=cut_after_epoch_2)
    cut = str(tmp_path / "fast_cifar10" / "b")
    resumed = train(load_config("configs/fast_cifar10.yml", base + [f"Global.checkpoints={cut}", "Global.verbose=0"]),
                    print_fn=lambda *a, **k: None)
    a = paddle.load(f"{straight['run_dir']}/latest.pdparams")
    b = paddle.load(f"{resumed['run_dir']}/latest.pdparams")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)
    assert straight["final"]["acc"] == resumed["final"]["acc"]
