"""models/: every registered model on CIFAR- and digits-shaped input, registry errors, init
schemes, the SGU gate init, spatial attention and the FLOP counter (hand-computed values)."""
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from models import build_model, list_models
from models.gmlp import SpatialGatingUnit
from models.init import apply_init, count_params
from models.spatial_attention import SpatialAttention, channel_max
from models.summary import model_summary
from utils.errors import ConfigError

# (in_channels, image_size): CIFAR and scikit-learn digits.
INPUTS = [(3, 32), (1, 8)]
NUM_CLASSES = 10
# Models that reject 8 x 8 (a whitening conv and three 2x2 pools): their one-channel case runs at this side.
MIN_SIDE = {"fastnet": 9, "fastnet_wide": 9}


def test_all_families_registered():
    assert set(list_models()) >= {"gmlp_tiny", "gmlp_small", "googlenet", "cnn", "cnn_sa", "resnet8", "resnet20",
                                  "resnet20_sa", "mlp"}


@pytest.mark.parametrize("in_channels,image_size", INPUTS, ids=lambda v: str(v))
@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name, in_channels, image_size):
    paddle.seed(0)
    image_size = max(image_size, MIN_SIDE.get(name, 0))
    model = build_model(name, num_classes=NUM_CLASSES, in_channels=in_channels, image_size=image_size)
    x = paddle.randn([4, in_channels, image_size, image_size])
    labels = paddle.to_tensor([0, 3, 7, 9])

    model.train()
    out = model(x)
    assert list(out.shape) == [4, NUM_CLASSES]
    assert out.dtype == paddle.float32
    assert np.isfinite(out.numpy()).all()
    F.cross_entropy(out, labels).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if not p.stop_gradient]
    assert trainable
    for pname, p in trainable:
        assert p.grad is not None, f"{pname} got no gradient"
        g = p.grad.numpy()
        assert np.isfinite(g).all(), f"{pname}: non-finite gradient"
        # No exceptions needed: convs before BN have no bias (a bias there gets a ~0
        # gradient), and the SGU's near-zero weights still pass ~1e-3-scale gradients.
        assert np.abs(g).max() > 0, f"{pname}: all-zero gradient"

    # Eval mode: dropout and drop-path off, BN on running stats -> repeatable.
    model.eval()
    with paddle.no_grad():
        a, b = model(x).numpy(), model(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()


def test_unknown_model_lists_names():
    with pytest.raises(ConfigError) as e:
        build_model("gmlp_tiniest")
    msg = str(e.value)
    assert "unknown model 'gmlp_tiniest'" in msg and "did you mean 'gmlp_tiny'" in msg
    for name in list_models():
        assert name in msg


def test_unknown_kwarg_did_you_mean():
    with pytest.raises(ConfigError) as e:
        build_model("gmlp_tiny", dpeth=2)
    msg = str(e.value)
    assert "Arch.dpeth" in msg and "did you mean 'depth'" in msg and "patch_size" in msg


@pytest.mark.parametrize("name,kwargs,fragment", [
    ("gmlp_tiny", {"image_size": 30}, "not divisible by patch_size 4"),
    ("gmlp_tiny", {"ffn_ratio": 1, "dim": 5}, "even integer"),
    ("gmlp_tiny", {"ffn_ratio": 1.5, "dim": 3}, "even integer"),
    ("mlp", {"hidden": "256"}, "list of positive ints"),
    ("mlp", {"hidden": [64, 0]}, "list of positive ints"),
    ("mlp", {"act_layer": "Relu"}, "not a paddle.nn layer"),
    ("cnn", {"image_size": 2}, "too small"),
    ("fastnet", {"image_size": 8}, "too small"),
])
def test_bad_values_are_config_errors(name, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_model(name, **kwargs)


def test_mlp_hidden_from_yaml():
    # YAML gives lists (or a bare int) and activation names as strings.
    m = build_model("mlp", in_channels=1, image_size=8, hidden=[32, 16], act_layer="GELU")
    shapes = [list(l.weight.shape) for l in m.sublayers() if isinstance(l, nn.Linear)]
    assert shapes == [[64, 32], [32, 16], [16, 10]]
    assert sum(isinstance(l, nn.GELU) for l in m.sublayers()) == 2
    m = build_model("mlp", in_channels=1, image_size=8, hidden=20)
    assert [list(l.weight.shape) for l in m.sublayers() if isinstance(l, nn.Linear)] == [[64, 20], [20, 10]]


@pytest.mark.parametrize("scheme,expected_std", [
    ("kaiming", math.sqrt(2 / 3072)),            # He normal: fan_in = 3 * 32 * 32
    ("xavier", math.sqrt(2 / (3072 + 512))),     # Glorot uniform: limit sqrt(6 / (in + out)), std = limit / sqrt(3)
    ("normal", 0.05),                            # init_std
])
def test_init_scheme_stats(scheme, expected_std):
    paddle.seed(1)
    m = build_model("mlp", hidden=[512], init=scheme, init_std=0.05)
    first = m.body[0]
    w = first.weight.numpy()
    assert w.shape == (3072, 512)
    assert abs(w.std() - expected_std) < 0.1 * expected_std
    assert abs(w.mean()) < 0.01 * expected_std  # 1.5M samples: sampling error ~ std / 1250
    if scheme == "xavier":
        assert np.abs(w).max() <= math.sqrt(6 / (3072 + 512)) + 1e-7
    np.testing.assert_array_equal(first.bias.numpy(), 0.0)


def test_unknown_init_scheme():
    with pytest.raises(ValueError, match="unknown init 'he'"):
        apply_init(nn.Linear(2, 2), "he")


def _sgus(model):
    return [l for l in model.sublayers() if isinstance(l, SpatialGatingUnit)]


def test_sgu_gate_init_survives_kaiming():
    paddle.seed(2)
    m = build_model("gmlp_tiny", init="kaiming")
    sgus = _sgus(m)
    assert len(sgus) == 4
    for sgu in sgus:
        w, b = sgu.spatial_weight.numpy(), sgu.spatial_bias.numpy()
        assert w.shape == (64, 64) and b.shape == (64, 1)      # 32 / 4 = 8 -> 64 tokens
        assert np.abs(w).max() <= 1e-3 and np.abs(w).max() > 0  # uniform +-1e-3, not zeros
        np.testing.assert_array_equal(b, 1.0)
    # ... while the scheme did reach the ordinary Linear layers (He std sqrt(2 / 128)).
    fc1 = m.blocks[0].fc1.weight.numpy()
    assert abs(fc1.std() - math.sqrt(2 / 128)) < 0.1 * math.sqrt(2 / 128)

    # Identity-like start: the unit returns ~u (gate ~1), so each block starts as an FFN.
    sgu = sgus[0]
    x = paddle.randn([2, 64, 512])
    u = x[:, :, :256].numpy()
    out = sgu(x).numpy()
    assert out.shape == (2, 64, 256)
    assert np.abs(out - u).max() <= 0.1 * np.abs(u).max()
    assert np.abs(out - u).max() > 0


def test_sgu_mixes_tokens_row_major():
    # spatial_weight[i, j]: input token j -> output token i.
    sgu = SpatialGatingUnit(4, 3)
    w = np.zeros((3, 3), "float32")
    w[0, 2] = 1.0
    sgu.spatial_weight.set_value(w)
    sgu.spatial_bias.set_value(np.zeros((3, 1), "float32"))
    x = paddle.randn([1, 3, 4])
    v = F.layer_norm(x[:, :, 2:], [2]).numpy()
    out = sgu(x).numpy()
    np.testing.assert_allclose(out[0, 0], x.numpy()[0, 0, :2] * v[0, 2], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[0, 1:], 0.0)


def test_spatial_attention_map():
    paddle.seed(3)
    sa = SpatialAttention(kernel_size=7)
    x = paddle.randn([2, 5, 6, 7])
    out = sa(x)
    m = sa.last_map
    assert list(m.shape) == [2, 1, 6, 7] and m.stop_gradient
    mn = m.numpy()
    assert (mn > 0).all() and (mn < 1).all()
    np.testing.assert_allclose(out.numpy(), x.numpy() * mn, rtol=1e-6, atol=1e-7)

    # Channel 0 of the conv input is the channel mean, channel 1 the channel max.
    xn = x.numpy()
    for ch, ref in ((0, xn.mean(axis=1, keepdims=True)), (1, xn.max(axis=1, keepdims=True))):
        w = np.zeros((1, 2, 7, 7), "float32")
        w[0, ch, 3, 3] = 1.0
        sa.conv.weight.set_value(w)
        sa.conv.bias.set_value(np.zeros(1, "float32"))
        sa(x)
        np.testing.assert_allclose(sa.last_map.numpy(), 1 / (1 + np.exp(-ref)), rtol=1e-5, atol=1e-6)


def test_channel_max_matches_paddle_max():
    # channel_max replaces paddle.max(axis=1), whose CPU backward is ~60x slower; same values and gradients.
    paddle.seed(4)
    x1 = paddle.randn([3, 6, 5, 4])
    x1.stop_gradient = False
    x2 = x1.detach()
    x2.stop_gradient = False
    w = paddle.randn([3, 1, 5, 4])
    a, b = channel_max(x1), x2.max(axis=1, keepdim=True)
    assert list(a.shape) == [3, 1, 5, 4]
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    (a * w).sum().backward()
    (b * w).sum().backward()
    np.testing.assert_array_equal(x1.grad.numpy(), x2.grad.numpy())
    assert (x1.grad.numpy() != 0).sum() == 3 * 5 * 4  # one winner per position


def test_spatial_attention_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(4)


@pytest.mark.parametrize("plain,with_sa,num_sa", [("cnn", "cnn_sa", 3), ("resnet20", "resnet20_sa", 9)])
def test_attention_pairs_differ_only_by_attention(plain, with_sa, num_sa):
    a = {n: list(p.shape) for n, p in build_model(plain).named_parameters()}
    b = {n: list(p.shape) for n, p in build_model(with_sa).named_parameters()}
    extra = set(b) - set(a)
    assert set(a) <= set(b)
    assert all(b[n] == s for n, s in a.items())
    assert extra and all(".attn.conv." in n for n in extra)
    assert sum(math.prod(b[n]) for n in extra) == num_sa * (2 * 7 * 7 + 1)


class _Tiny(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2D(8)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def test_model_summary_hand_computed():
    net = _Tiny()
    net.train()
    s = model_summary(net, [1, 3, 8, 8])
    conv = 8 * 8 * 8 * (3 * 3 * 3)   # output elements x kernel volume = 13824
    bn = 8 * 8 * 8                   # one MAC per output element = 512
    fc = 10 * 512                    # 5120
    assert s["flops"] == conv + bn + fc == 19456
    # conv 216 + 8, BN weight/bias 16 (+ 16 running stats, not trainable), fc 5120 + 10
    assert s["trainable"] == 224 + 16 + 5130
    assert s["params"] == 224 + 32 + 5130
    assert net.training, "model_summary must restore train mode"
    assert model_summary(net, [2, 3, 8, 8])["flops"] == 2 * 19456
    assert "conv" in s["table"] and "13,824" in s["table"]
    assert model_summary(net)["flops"] is None


def test_model_summary_counts_sgu_token_mixing():
    m = build_model("gmlp_tiny", depth=2)
    L, d, h = 64, 128, 256  # tokens, dim, ffn_dim / 2
    embed = L * d * (3 * 4 * 4)
    block = L * d + L * d * 2 * h + L * h + h * L * L + L * h * d  # norm, fc1, SGU norm, mixing, fc2
    head = L * d + d * 10                                          # final norm, head
    assert model_summary(m, [1, 3, 32, 32])["flops"] == embed + 2 * block + head


def test_count_params_matches_summary():
    m = build_model("resnet8")
    assert model_summary(m)["params"] == count_params(m)[0]
