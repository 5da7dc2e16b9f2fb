"""Receptive field: hand-computed stacks, dilation, stride, branches, the gradient check, the shipped models, the tool.

Recurrences (per axis), with j = r = 1 and start = 0 at the input:
    k_eff = d (k - 1) + 1;  j_out = j_in s;  r_out = r_in + (k_eff - 1) j_in;
    start_out = start_in + ((k_eff - 1) / 2 - p) j_in
"""
import importlib.util
import json
import os

import numpy as np
import paddle.nn as nn
import pytest

import models
from utils.studies.receptive_field import gradient_extent, receptive_field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def col(result, key, kinds=("conv", "pool", "adaptive_pool", "global", "merge")):
    """One value per row (the h axis; every test stack is square)."""
    return [r[key][0] if isinstance(r[key], tuple) else r[key] for r in result["rows"] if r["kind"] in kinds]


def positive(model, seed=0):
    """All conv weights positive and no bias: the gradient of a linear stack is > 0 on its whole field."""
    rng = np.random.RandomState(seed)
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, nn.Conv2D):
            layer.weight.set_value(rng.uniform(0.5, 1.0, layer.weight.shape).astype("float32"))
            if layer.bias is not None:
                layer.bias.set_value(np.zeros(layer.bias.shape, "float32"))
    return model


def expected_box(result, unit):
    """Input rows/cols covered by output unit (i, j): centre start + i * jump, +-(r - 1) / 2."""
    last = result["rows"][-1]
    box = []
    for a in range(2):
        centre = last["start"][a] + unit[a] * last["jump"][a]
        half = (last["rf"][a] - 1) / 2
        box.append((int(round(centre - half)), int(round(centre + half))))
    return tuple(box)


def test_known_stack_by_hand():
    # conv3 s1 p1 -> conv3 s1 p1 -> maxpool2 s2 -> conv3 s1 p1 on 16 x 16:
    #   conv1: j = 1,     r = 1 + (3-1)*1 = 3,  start = 0 + (1 - 1)*1   = 0
    #   conv2: j = 1,     r = 3 + (3-1)*1 = 5,  start = 0
    #   pool : j = 1*2=2, r = 5 + (2-1)*1 = 6,  start = 0 + (0.5 - 0)*1 = 0.5
    #   conv3: j = 2,     r = 6 + (3-1)*2 = 10, start = 0.5 + (1 - 1)*2 = 0.5
    net = nn.Sequential(nn.Conv2D(1, 4, 3, padding=1), nn.Conv2D(4, 4, 3, padding=1), nn.MaxPool2D(2, 2),
                        nn.Conv2D(4, 4, 3, padding=1))
    res = receptive_field(net, 16)
    assert col(res, "rf") == [3, 5, 6, 10]
    assert col(res, "jump") == [1, 1, 2, 2]
    assert col(res, "start") == [0, 0, 0.5, 0.5]
    assert col(res, "out_size") == [16, 16, 8, 8]
    assert [r["type"] for r in res["rows"]] == ["Conv2D", "Conv2D", "MaxPool2D", "Conv2D"]
    assert res["rows"][2]["kernel"] == (2, 2) and res["rows"][2]["stride"] == (2, 2)
    assert res["covers"] is False and not res["approximate"]          # 10 < 16
    assert receptive_field(net, 8)["covers"] is True                  # 10 >= 8
    assert "does NOT cover" in res["verdict"]


def test_dilation():
    # conv3 d2 p2: k_eff = 5, r = 5; conv3 d1 p1: r = 7; conv3 d3 p0: k_eff = 7, r = 13, start = 0 + (3 - 0)*1 = 3
    net = nn.Sequential(nn.Conv2D(1, 2, 3, padding=2, dilation=2), nn.Conv2D(2, 2, 3, padding=1),
                        nn.Conv2D(2, 2, 3, dilation=3))
    res = receptive_field(net, 20)
    assert col(res, "rf") == [5, 7, 13]
    assert col(res, "jump") == [1, 1, 1]
    assert col(res, "start") == [0, 0, 3]
    assert res["rows"][0]["dilation"] == (2, 2)
    # Two dilated 3x3 (k_eff 5) without padding: a 9 x 9 field with holes (only even offsets are read).
    holes = positive(nn.Sequential(nn.Conv2D(1, 1, 3, dilation=2, bias_attr=False),
                                   nn.Conv2D(1, 1, 3, dilation=2, bias_attr=False)))
    res = receptive_field(holes, 21)
    assert col(res, "rf") == [5, 9]
    box, mask = gradient_extent(holes, 21, (6, 6))
    # start = 0 + (2 - 0)*1 = 2, then 2 + 2 = 4: unit 6 is centred on 4 + 6*1 = 10, +-4
    assert box == expected_box(res, (6, 6)) == ((6, 14), (6, 14))
    assert mask.sum() == 5 * 5


def test_stride_two_conv():
    # conv3 s2 p1: j = 2, r = 3, start 0; conv3 s1 p1: r = 3 + 2*2 = 7; conv3 s2 p0: j = 4, r = 7 + 2*2 = 11,
    # start = 0 + (1 - 0)*2 = 2. Sizes 17 -> 9 -> 9 -> 4.
    net = nn.Sequential(nn.Conv2D(1, 2, 3, stride=2, padding=1), nn.Conv2D(2, 2, 3, padding=1),
                        nn.Conv2D(2, 2, 3, stride=2))
    res = receptive_field(net, 17)
    assert col(res, "rf") == [3, 7, 11]
    assert col(res, "jump") == [2, 2, 4]
    assert col(res, "start") == [0, 0, 2]
    assert col(res, "out_size") == [9, 9, 4]


def test_gradient_is_nonzero_exactly_within_the_field():
    # Linear stack (no activation, positive weights, average pooling): every input pixel inside the
    # field of the centre unit reaches it, none outside does. The window lies inside the 64 x 64 input,
    # so padding does not clip it.
    net = positive(nn.Sequential(nn.Conv2D(1, 3, 3, padding=1, bias_attr=False),
                                 nn.Conv2D(3, 3, 3, stride=2, padding=1, bias_attr=False),
                                 nn.AvgPool2D(2, 2),
                                 nn.Conv2D(3, 3, 3, padding=2, dilation=2, bias_attr=False),
                                 nn.Conv2D(3, 1, 5, padding=2, bias_attr=False)))
    res = receptive_field(net, 64)
    # r: 3, 3+2 = 5 (j 2), 5+1*2 = 7 (j 4, start 1), 7+4*4 = 23, 23+4*4 = 39
    assert col(res, "rf") == [3, 5, 7, 23, 39] and col(res, "jump") == [1, 2, 4, 4, 4]
    unit = (8, 8)
    want = expected_box(res, unit)
    assert want == ((14, 52), (14, 52))  # centre 1 + 8*4 = 33, +-19
    box, mask = gradient_extent(net, 64, unit, in_channels=1)
    assert box == want
    assert mask[14:53, 14:53].all() and mask.sum() == 39 * 39
    # An off-centre unit and a non-square input give the same agreement.
    res = receptive_field(net, (64, 48))
    box, _ = gradient_extent(net, (64, 48), (9, 6))
    assert box == expected_box(res, (9, 6))


def test_max_pool_field_is_an_upper_bound():
    net = nn.Sequential(nn.Conv2D(1, 4, 3, padding=1), nn.Conv2D(4, 4, 3, padding=1), nn.MaxPool2D(2, 2),
                        nn.Conv2D(4, 1, 3, padding=1))
    res = receptive_field(net, 32)
    (r0, r1), (c0, c1) = expected_box(res, (8, 8))
    _, mask = gradient_extent(net, 32, (8, 8))
    rows, cols = np.nonzero(mask)
    assert mask.any() and rows.min() >= r0 and rows.max() <= r1 and cols.min() >= c0 and cols.max() <= c1


class TwoBranch(nn.Layer):
    """Inception-like: two branches merged by a non-layer op, then a 3x3 conv."""

    def __init__(self, first=3, second=5):
        super().__init__()
        self.a = nn.Conv2D(1, 2, first, padding=first // 2, bias_attr=False)
        self.b = nn.Conv2D(1, 2, second, padding=second // 2, bias_attr=False)
        self.c = nn.Conv2D(2, 1, 3, padding=1, bias_attr=False)

    def forward(self, x):
        return self.c(self.a(x) + self.b(x))


class Residual(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2D(1, 1, 3, padding=1, bias_attr=False)
        self.conv2 = nn.Conv2D(1, 1, 3, padding=1, bias_attr=False)

    def forward(self, x):
        return self.conv2(self.conv1(x)) + x


@pytest.mark.parametrize("first, second", [(3, 5), (5, 3)])
def test_branches_take_the_largest(first, second):
    net = positive(TwoBranch(first, second))
    res = receptive_field(net, 21)
    assert col(res, "rf", ("conv",)) == [first, second, 7]          # 5x5 branch then 3x3: 5 + 2 = 7
    # The merge row appears where the hull differs from the sequential guess (the last branch).
    assert [r["rf"][0] for r in res["rows"] if r["kind"] == "merge"] == ([5] if second == 3 else [])
    box, mask = gradient_extent(net, 21, (10, 10))
    assert box == expected_box(res, (10, 10)) == ((7, 13), (7, 13))
    # conv(conv(x)) + x: the hull of 5 and 1 is the residual path's 5, the sequential guess: no merge row
    res = receptive_field(positive(Residual()), 15)
    assert res["final"]["rf"] == (5, 5) and [r["kind"] for r in res["rows"]] == ["conv", "conv"]
    assert gradient_extent(positive(Residual()), 15, (7, 7))[0] == ((5, 9), (5, 9))


@pytest.mark.parametrize("name, last_rf, jump", [
    ("cnn", 32, 4),          # 3, 5, pool 6, 10, 14, pool 16, 24, 32
    ("resnet20", 81, 4),     # stem 3; 6 convs at j1: 15; s2 conv +2: 17, 5 convs at j2: 37; s2 +4: 41, 5 at j4: 81
    ("googlenet", 177, 8),   # stem 3; pool 5 (j2); 3a,3b +8 (5x5 branch): 21; pool 25 (j4); 4a-4e +16: 105;
                             # pool 113 (j8); 5a, 5b +32: 177
])
def test_shipped_conv_models_at_32(name, last_rf, jump):
    res = receptive_field(models.build_model(name, 10, 3, 32), 32, name=name)
    last = res["last_spatial"]
    assert last["rf"] == (last_rf, last_rf) and last["jump"] == (jump, jump)
    assert res["first_global"]["type"] == "AdaptiveAvgPool2D" and res["final"]["is_global"]
    assert res["covers"] and f"{name} at 32" in res["verdict"]
    assert res["approximate"] == (name != "cnn")  # branches in ResNet and GoogLeNet


def test_gmlp_is_global_after_the_first_sgu():
    res = receptive_field(models.build_model("gmlp_tiny", 10, 3, 32), 32)
    assert [r["name"] for r in res["rows"]] == ["patch_embed.proj", "blocks.0.sgu"]
    patch = res["last_spatial"]
    assert patch["rf"] == (4, 4) and patch["jump"] == (4, 4) and patch["start"] == (1.5, 1.5)
    assert res["first_global"]["type"] == "SpatialGatingUnit" and res["first_global"]["rf"] == (32, 32)
    assert res["covers"] and "does NOT cover" in res["verdict"] and "global" in res["verdict"]
    mlp = receptive_field(models.build_model("mlp", 10, 1, 8), 8)
    assert mlp["first_global"]["name"] == "body.0" and mlp["last_spatial"] is None and mlp["covers"]


def load_tool():
    spec = importlib.util.spec_from_file_location("tool_rf", os.path.join(ROOT, "tools", "receptive_field.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tool_prints_table_and_verdict(tmp_path, capsys):
    tool = load_tool()
    tool.main(["-c", os.path.join(ROOT, "configs/cnn_digits.yml"), "--json", str(tmp_path / "rf.json")])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "cnn_digits: model cnn, input 1x8x8"
    assert out[1].split()[:2] == ["layer", "type"] and len(out) == 2 + 9 + 1
    assert out[-1].startswith("cnn at 8: ") and "covers the input" in out[-1]
    saved = json.load(open(tmp_path / "rf.json"))
    assert saved["covers"] is True and len(saved["rows"]) == 9
    # CIFAR without the archive: the native 3x32x32 shape, said so
    tool.main(["-c", os.path.join(ROOT, "configs/gmlp_cifar10.yml"), "-o", f"Data.data_dir={tmp_path}/none.tar.gz",
               "-o", "Data.download=false"])  # never the network from a test
    out = capsys.readouterr().out.splitlines()
    assert "input 3x32x32" in out[0] and "not found" in out[0]
    assert out[-1].startswith("gmlp_tiny at 32") and "blocks.0.sgu" in out[-1]


@pytest.mark.parametrize("argv, words", [
    (["-c", "configs/cnn_digits.yml", "-o", "Arch.nam=3"], "Arch.nam"),
    (["-c", "configs/cnn_digits.yml", "-o", "Arch.name=cnnn"], "unknown model 'cnnn'"),
    (["-c", "configs/cnn_digits.yml", "-o", "Global.epoch=3"], "unknown key 'Global.epoch'"),
    (["-c", "configs/missing.yml"], "config file not found"),
])
def test_tool_errors_are_one_line(argv, words, capsys):
    tool = load_tool()
    argv = [os.path.join(ROOT, a) if a.endswith(".yml") else a for a in argv]
    with pytest.raises(SystemExit) as e:
        tool.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and words in err


def test_hooks_are_removed_and_mode_restored():
    net = models.build_model("cnn", 10, 3, 32)
    net.train()
    receptive_field(net, 32)
    assert net.training
    assert all(not layer._forward_pre_hooks and not layer._forward_post_hooks
               for layer in net.sublayers(include_self=True))
