"""Test-time augmentation (Eval.tta): the views' logits, labels untouched, the config key, the eval tool."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest

from utils.config import load_config
from utils.errors import ConfigError
from utils.training.evaluate import LastEval, RegressionMetrics, predict, summarize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("none", "flip", "flip_translate")


class Linear(paddle.nn.Layer):
    """logits = flatten(x) @ W + b: not flip-symmetric."""

    def __init__(self, c=2, h=5, w=6, classes=4, symmetric=False):
        super().__init__()
        self.fc = paddle.nn.Linear(c * h * w, classes)
        self.symmetric = symmetric

    def forward(self, x):
        if self.symmetric:  # x + mirror(x) is exactly its own mirror: the output cannot tell a flip
            x = x + paddle.flip(x, axis=[3])
        return self.fc(x.flatten(1))


class Images(paddle.io.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def loader(x, y, batch=7):
    return paddle.io.DataLoader(Images(x, y), batch_size=batch, shuffle=False)


def images(n=17, c=2, h=5, w=6, seed=0):
    rs = np.random.RandomState(seed)
    return rs.randn(n, c, h, w).astype("float32"), rs.randint(0, 4, n).astype("int64")


def reference(net, x, mode):
    """The TTA of the brief in float64 numpy, from the linear layer's own weights."""
    w, b = net.fc.weight.numpy().astype(np.float64), net.fc.bias.numpy().astype(np.float64)
    f = lambda v: v.reshape(len(v), -1).astype(np.float64) @ w + b  # noqa: E731
    flipavg = lambda v: (f(v) + f(v[..., ::-1])) / 2  # noqa: E731
    if mode == "none":
        return f(x)
    if mode == "flip":
        return flipavg(x)
    h, wd = x.shape[2:]
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    return 0.5 * flipavg(x) + 0.25 * flipavg(p[:, :, 0:h, 0:wd]) + 0.25 * flipavg(p[:, :, 2:h + 2, 2:wd + 2])


def test_a_flip_symmetric_model_gives_identical_logits_under_none_and_flip():
    paddle.seed(0)
    net = Linear(symmetric=True)
    x, y = images()
    none, labels = predict(net, loader(x, y), "none")
    flip, labels_flip = predict(net, loader(x, y), "flip")
    assert none.shape == (17, 4) and np.array_equal(none, flip)
    assert np.array_equal(labels, y) and np.array_equal(labels_flip, y)


def test_flip_is_the_mean_of_the_image_and_its_mirror_and_flip_translate_matches_numpy():
    paddle.seed(1)
    net = Linear()
    x, y = images(seed=1)
    for mode in MODES:
        logits, labels = predict(net, loader(x, y), mode)
        assert logits.dtype == np.float32 and np.array_equal(labels, y)
        np.testing.assert_allclose(logits, reference(net, x, mode), rtol=1e-5, atol=1e-5)
    # the modes do differ on an asymmetric model (the test above is not vacuous)
    a, b = reference(net, x, "none"), reference(net, x, "flip")
    assert np.abs(a - b).max() > 0.1 and np.abs(b - reference(net, x, "flip_translate")).max() > 0.01


class LabelFromImage(paddle.nn.Layer):
    """One-hot of the label written into every pixel: the same answer for every flip and shift."""

    def forward(self, x):
        label = x.mean(axis=[1, 2, 3]).round().astype("int64")
        return paddle.nn.functional.one_hot(label, 5) * 10.0


@pytest.mark.parametrize("mode", MODES)
def test_labels_are_never_augmented_or_reordered(mode):
    rs = np.random.RandomState(2)
    y = rs.randint(0, 5, 23).astype("int64")  # 23 samples in batches of 7: a short last batch
    x = np.broadcast_to(y[:, None, None, None], (23, 3, 4, 4)).astype("float32").copy()
    ev = LastEval(LabelFromImage(), loader(x, y), topk=(1,), tta=mode)
    metrics = ev()
    assert metrics["acc"] == 1.0 and metrics["samples"] == 23
    assert np.array_equal(ev.labels, y) and np.array_equal(ev.logits.argmax(1), y)


def test_the_data_parallel_evaluation_applies_the_same_tta():
    from utils.training.ranks import ShardedEval  # one process here: its collectives are the identity

    paddle.seed(3)
    net = Linear()
    x, y = images(seed=3)
    for mode in MODES:
        sharded = ShardedEval(net, loader(x, y), topk=(1, 2), keep_logits=True, tta=mode)
        metrics = sharded()
        expected = summarize(reference(net, x, mode), y, (1, 2))
        assert metrics["acc"] == expected["acc"] and metrics["acc_top2"] == expected["acc_top2"]
        assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert np.array_equal(sharded.labels, y)


def test_the_config_key_lists_its_values_and_the_sections_still_resolve():
    cfg = load_config(os.path.join(ROOT, "configs/mlp_digits.yml"))
    assert cfg["Eval"] == {"tta": "none"}
    assert load_config(os.path.join(ROOT, "configs/mlp_digits.yml"), ["Eval.tta=flip"])["Eval"]["tta"] == "flip"
    with pytest.raises(ConfigError) as e:
        load_config(os.path.join(ROOT, "configs/mlp_digits.yml"), ["Eval.tta=flipp"])
    assert "Eval.tta" in str(e.value) and "['none', 'flip', 'flip_translate']" in str(e.value)
    assert "did you mean 'flip'" in str(e.value)
    with pytest.raises(ConfigError, match="unknown key 'Eval.ttaa'.*did you mean 'tta'"):
        load_config(os.path.join(ROOT, "configs/mlp_digits.yml"), ["Eval.ttaa=flip"])
    with pytest.raises(ConfigError, match="unknown section 'Evl'.*did you mean 'Eval'"):
        load_config(os.path.join(ROOT, "configs/mlp_digits.yml"), ["Evl.tta=flip"])
    # PaddleClas's Global.eval_interval is still read as ours
    assert load_config(os.path.join(ROOT, "configs/mlp_digits.yml"),
                       ["Global.eval_interval=3"])["Global"]["eval_every_epochs"] == 3


def test_regression_and_tabular_inputs_refuse_flips(tmp_path):
    net = Linear(c=10, h=1, w=1)
    x = np.zeros((6, 10, 1, 1), np.float32)
    with pytest.raises(ConfigError, match=r"Eval.tta: flip .*Global.task is regression.*Eval.tta: none"):
        LastEval(net, loader(x, np.zeros(6, np.float32)), regression=RegressionMetrics(), tta="flip")
    with pytest.raises(ConfigError, match=r"Eval.tta: flip_translate .*10 x 1 x 1.*Eval.tta: none"):
        LastEval(net, loader(x, np.zeros(6, np.int64)), tta="flip_translate")
    with pytest.raises(ConfigError, match=r"Eval.tta: flip .* 6 x 10 x 1 x 1"):
        predict(net, [(paddle.to_tensor(x), paddle.zeros([6]))], "flip")  # no dataset to look at: the batch
    assert LastEval(net, loader(x, np.zeros(6, np.float32)), regression=RegressionMetrics()).tta == "none"
    # a regression config is refused when it loads, before any run directory exists
    with pytest.raises(ConfigError, match="Eval.tta: 'flip' flips and shifts images; a regression table has none"):
        load_config(os.path.join(ROOT, "configs/mlp_diabetes.yml"),
                    [f"Global.output_dir={tmp_path}", "Global.verbose=0", "Eval.tta=flip", "VisualDL.enable=false"])
    assert not os.path.exists(os.path.join(str(tmp_path), "mlp_diabetes"))


def test_eval_tool_tta_flag_prints_the_mode_and_predicts_accuracy(tmp_path):
    from utils.build import build_network
    from utils.data import build_datasets, build_eval_loader
    from utils.trainer import train
    from utils.training.checkpoint import load_weights

    cfg = load_config(os.path.join(ROOT, "configs/mlp_digits.yml"),
                      [f"Global.output_dir={tmp_path}", "Global.verbose=0", "Global.epochs=1", "VisualDL.enable=false",
                       "Doctor.enable=false"])
    run_dir = train(cfg, print_fn=lambda *a, **k: None)["run_dir"]
    out = tmp_path / "eval.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "tools/eval.py", run_dir, "--tta", "flip", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("loss "))
    assert line.endswith("(test-time augmentation: flip)"), line
    printed = float(re.search(r"\bacc (\d\.\d{4})", line).group(1))

    bundle = build_datasets(cfg)
    net = build_network(cfg, bundle)
    load_weights(net, os.path.join(run_dir, "best_model"))
    val = build_eval_loader(cfg, bundle.val)
    flip = summarize(*predict(net, val, "flip"), topk=(1,))
    none = summarize(*predict(net, val, "none"), topk=(1,))
    report = json.loads(out.read_text())
    assert report["tta"] == "flip" and printed == round(flip["acc"], 4)
    assert report["acc"] == pytest.approx(flip["acc"]) and report["loss"] == pytest.approx(flip["loss"], rel=1e-6)
    assert abs(flip["loss"] - none["loss"]) > 1e-4  # the flag did change the evaluation
