"""Init study: the CS231n lecture-6 numbers, the model mode on real data, the PNG, the tool's errors.

Tolerances. Each layer's statistics are taken over 1000 x 500 = 500k activations, so the
sampling error of one layer's std is ~0.1%; what moves the numbers is the random weight draw,
whose gain fluctuates by ~1-3% per layer and compounds through depth. Hence 5% for the
published normal(0.01) + tanh figures (four layers, measured within 1%), 2% for first-layer
values that follow from the Gaussian input alone, and wider bands where a random walk builds
up (Kaiming + ReLU: across 20 seeds the std at layer 10 has a spread of 0.12 around 0.82).
The seed is fixed, so the tests are deterministic; the bands say how far a different draw
(another seed or another Paddle RNG) may legitimately land.
"""
import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from utils.config import load_config
from utils.studies import init_study as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def classic():
    runs = st.classic_experiment()  # seed 0, 10 layers, 500 units, 1000 samples
    return {(r["init"], r["activation"]): r for r in runs}


def stds(run):
    return np.array([r["std"] for r in run["layers"]])


def test_classic_shape(classic):
    assert set(classic) == {(i, a) for i in st.CLASSIC_INITS for a in st.CLASSIC_ACTIVATIONS}
    for run in classic.values():
        assert [r["layer"] for r in run["layers"]] == list(range(1, 11))
        assert all(math.isfinite(r["mean"]) and math.isfinite(r["std"]) for r in run["layers"])


def test_normal_001_tanh_matches_the_lecture(classic):
    # CS231n 2017 lecture 6: layer stds 0.213, 0.0476, 0.0106, 0.00238, ... Each layer multiplies
    # the std by ~sqrt(500) * 0.01 = 0.224 (tanh is the identity near 0): activations vanish.
    s = stds(classic[("normal_0.01", "tanh")])
    for got, want in zip(s[:4], [0.213, 0.0476, 0.0106, 0.00238]):
        assert got == pytest.approx(want, rel=0.05)
    ratios = s[1:] / s[:-1]
    assert np.all(np.abs(ratios - math.sqrt(500) * 0.01) < 0.05 * 0.2236)
    assert s[-1] < 1e-6


def test_kaiming_relu_stays_near_082(classic):
    # Convention: std (population, np.std) of the ReLU outputs H = relu(X @ W), W ~ N(0, 2 / fan_in).
    # Every layer's pre-activation is ~N(0, 2): std(relu(z)) = sqrt(2) * sqrt(1/2 - 1/(2 pi)) = 0.8257.
    expected = math.sqrt(2) * math.sqrt(0.5 - 1 / (2 * math.pi))
    run = classic[("kaiming", "relu")]
    s = stds(run)
    assert s[0] == pytest.approx(expected, rel=0.02)          # input statistics only
    assert run["layers"][0]["mean"] == pytest.approx(math.sqrt(2 / (2 * math.pi)), rel=0.02)
    # One draw random-walks with depth (seed 0 ends at 0.69); the band is ~2 sd at layer 10.
    assert np.all(np.abs(s / expected - 1) < 0.25), s
    # Averaged over draws the std stays at 0.82: no trend with depth (vs x0.71 per layer for Xavier).
    runs = [s] + [stds(st.classic_experiment(["kaiming"], ["relu"], seed=k, bins=0)[0]) for k in range(1, 6)]
    mean = np.mean(runs, axis=0)
    assert np.all(np.abs(mean / expected - 1) < 0.15), mean  # 6 draws: sd ~6% at layer 10
    assert abs(mean.mean() / expected - 1) < 0.05


def test_normal_1_tanh_saturates(classic):
    # Pre-activations have std sqrt(500) = 22: almost every unit sits at -1 or +1.
    run = classic[("normal_1.0", "tanh")]
    s = stds(run)
    assert np.all(np.abs(s - 0.98) < 0.01), s
    # |tanh(z)| > 0.99 iff |z| > atanh(0.99) = 2.65: P(|N(0, 500 E[h^2])| > 2.65) = 0.906 after layer 1.
    want = math.erfc(math.atanh(0.99) / math.sqrt(2 * 500 * 1.0))
    assert run["layers"][0]["saturated"] == pytest.approx(want, abs=0.01)
    assert all(r["saturated"] > 0.85 for r in run["layers"])
    assert all(r["dead_frac"] is None for r in run["layers"])


def test_xavier_tanh_decays_slowly_relu_halves_the_variance(classic):
    t = stds(classic[("xavier", "tanh")])
    assert t[0] == pytest.approx(0.6278, rel=0.02)            # std(tanh(N(0, 1)))
    assert np.all(np.diff(t) < 0) and np.all(t[1:] / t[:-1] > 0.75) and t[-1] > 0.2
    r = stds(classic[("xavier", "relu")])
    assert r[0] == pytest.approx(math.sqrt(0.5 - 1 / (2 * math.pi)), rel=0.02)  # std(relu(N(0, 1)))
    # ReLU zeroes half the input: E[h^2] halves each layer, so the std goes x 1/sqrt(2) = 0.71.
    ratios = r[1:] / r[:-1]
    assert np.all(np.abs(ratios / math.sqrt(0.5) - 1) < 0.10), ratios
    assert (r[-1] / r[0]) ** (1 / 9) == pytest.approx(math.sqrt(0.5), rel=0.05)
    relu = classic[("xavier", "relu")]["layers"]
    # Half the outputs are zero; without biases some units die with depth (inputs grow correlated):
    # none in the first layers, ~8% at layer 10 with this draw.
    assert all(0.45 < x["zero_frac"] < 0.55 for x in relu)
    assert relu[0]["dead_frac"] == 0 and relu[-1]["dead_frac"] < 0.2
    # ReLU is positively homogeneous and both runs draw the same numbers: Kaiming = Xavier x sqrt(2)^layer.
    k = stds(classic[("kaiming", "relu")])
    assert np.allclose(k / r, np.sqrt(2.0) ** np.arange(1, 11), rtol=1e-3)


def test_histogram_png(classic, tmp_path):
    runs = list(classic.values())
    path = tmp_path / "classic.png"
    n = st.plot_histograms(st.classic_panels(runs), str(path))
    assert n == 8 * 10  # one row per (init, activation), one panel per layer
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    w, h = Image.open(path).size
    assert w > h > 400
    # the table goes to CSV and JSON
    csv_path, json_path = st.save_table(st.classic_table(runs), str(tmp_path / "classic"))
    lines = open(csv_path).read().splitlines()
    assert len(lines) == 1 + 80 and lines[0].startswith("init,activation,layer,mean,std")
    import json

    assert len(json.load(open(json_path))) == 80


@pytest.fixture(scope="module")
def digits_cnn():
    cfg = load_config(os.path.join(ROOT, "configs/cnn_digits.yml"))
    from utils.data import build_datasets

    return cfg, build_datasets(cfg)


def test_model_mode_one_row_per_hooked_layer(digits_cnn):
    cfg, bundle = digits_cnn
    res = st.model_study(cfg, batch_size=32, bundle=bundle)
    rows, model = res["rows"], res["model"]
    hooked = st.hooked_layers(model)
    assert [r["name"] for r in rows] == [name for name, _, _ in hooked]  # each called once, forward order
    assert len(rows) == 13  # 6 convs, 6 ReLUs, the head
    assert all(math.isfinite(r[k]) for r in rows for k in ("mean", "std", "min", "max"))
    relus = [r for r in rows if r["type"] == "ReLU"]
    assert len(relus) == 6 and all(r["dead_frac"] == 0 and 0.3 < r["zero_frac"] < 0.7 for r in relus)
    assert rows[0]["shape"] == [32, 32, 8, 8] and res["batch_shape"] == [32, 1, 8, 8]
    assert st.findings(rows) == []
    # --layers: evenly spaced, first and last kept
    few = st.model_activation_stats(model, np.zeros([2, 1, 8, 8], "float32"), max_layers=3)
    assert [r["index"] for r in few] == [0, 6, 12]
    assert all(not layer._forward_post_hooks for _, layer, _ in hooked)  # handles removed


def test_model_mode_detects_dead_relus(digits_cnn, tmp_path):
    cfg, bundle = digits_cnn
    import paddle

    res = st.model_study(cfg, init="kaiming", batch_size=16, bundle=bundle)
    model = res["model"]
    bn = model.stages[0].convs[0][1]  # conv -> BN -> ReLU: a BN shift of -100 kills every unit
    bn.bias.set_value(paddle.full(bn.bias.shape, -100.0))
    images = st.load_batch(cfg, bundle, 16)
    rows = st.model_activation_stats(model, images)
    first = next(r for r in rows if r["name"] == "stages.0.convs.0.2")
    assert first["dead_frac"] == 1.0 and first["zero_frac"] == 1.0 and first["std"] == 0
    assert any("stages.0.convs.0.2" in f and "dead ReLU" in f for f in st.findings(rows))
    n = st.plot_histograms(st.model_panels(rows), str(tmp_path / "m.png"), ncols=8)
    assert n == len(rows) and (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_model_mode_detects_saturated_tanh():
    cfg = load_config(os.path.join(ROOT, "configs/mlp_digits.yml"), ["Arch.act_layer=Tanh"])
    rows = st.model_study(cfg, init="normal", init_std=1.0, batch_size=32)["rows"]
    tanh = [r for r in rows if r["type"] == "Tanh"]
    assert len(tanh) == 2 and all(r["saturated"] > 0.5 for r in tanh)
    assert sum("saturated" in f for f in st.findings(rows)) == 2


def test_tool_classic_and_model(tmp_path, capsys):
    tool = load_tool("init_study")
    tool.main(["--out", str(tmp_path), "--layers", "3", "--units", "50", "--samples", "100", "--init", "kaiming"])
    out = capsys.readouterr().out
    assert "kaiming      relu" in out and (tmp_path / "classic.png").is_file()
    assert len(open(tmp_path / "classic.csv").read().splitlines()) == 1 + 2 * 3
    tool.main(["-c", os.path.join(ROOT, "configs/cnn_digits.yml"), "--out", str(tmp_path), "--batch-size", "8",
               "--init", "xavier", "--layers", "5"])
    out = capsys.readouterr().out
    assert "init xavier" in out and "stages.0.convs.0.0" in out and "findings" in out
    for ext in ("csv", "json", "png"):
        assert (tmp_path / f"cnn_digits_xavier.{ext}").is_file()


@pytest.mark.parametrize("argv, words", [
    (["--init", "he"], "--init he"),
    (["-c", "configs/no_such.yml"], "config file not found"),
    (["-c", "configs/cnn_digits.yml", "-o", "Arch.dept=3"], "Arch.dept"),
    (["--layers", "0"], "--layers"),
])
def test_tool_errors_are_one_line(argv, words, capsys):
    tool = load_tool("init_study")
    with pytest.raises(SystemExit) as e:
        tool.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and words in err


def test_cli_unknown_init_exits_2(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "tools/init_study.py", "-c", "configs/cnn_digits.yml", "--init", "lecun",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "unknown init" in r.stderr
