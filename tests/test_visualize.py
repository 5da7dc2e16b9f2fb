"""tools/visualize.py and utils/visual: every command writes a PNG of the planned size with
content and the planned panels; wrong paths, layers, images and models are one-line errors."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tool_asserts import assert_user_error

from utils import visual as vis
from utils.config import dump_config, load_config
from utils.errors import UserError
from utils.runs import open_run
from utils.trainer import train
from utils.visual.weights import MAX_HISTOGRAMS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A figure with real content: a blank white PNG has std 0, and the sparsest figure here
# (three line plots on white) measures ~30 on 0..255 grayscale.
MIN_PIXEL_STD = 15.0


def quiet(*a, **k):
    pass


def cfg_for(out, config, *overrides):
    return load_config(os.path.join(ROOT, config), [f"Global.output_dir={out}", "Global.verbose=0", *overrides])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained runs (2 epochs on 30% of digits, ~5 s together) and two digit images."""
    out = tmp_path_factory.mktemp("vis")
    tiny = ["Global.epochs=2", "Data.fraction=0.3", "Global.run_name=r"]
    sa = train(cfg_for(out, "configs/cnn_sa_digits.yml", *tiny), print_fn=quiet)["run_dir"]
    gm = train(cfg_for(out, "configs/gmlp_digits.yml", *tiny), print_fn=quiet)["run_dir"]
    from sklearn.datasets import load_digits

    digit = (load_digits().images[3] * 255 / 16).astype(np.uint8)   # a '3', values 0..16 like the data
    small, big = out / "digit8.png", out / "digit32.png"
    Image.fromarray(digit).save(small)
    Image.fromarray(digit).resize((32, 32), Image.NEAREST).save(big)
    return {"sa": sa, "gmlp": gm, "out": out, "image": str(small), "big_image": str(big)}


def untrained_run(folder, config, *overrides):
    """A run directory with config.yml and an untrained best_model (no training: checkpoint shape only)."""
    import paddle

    from utils.build import build_network
    from utils.data import build_datasets

    os.makedirs(folder, exist_ok=True)
    cfg = load_config(os.path.join(ROOT, config), overrides)
    network = build_network(cfg, build_datasets(cfg))
    paddle.save(network.state_dict(), os.path.join(folder, "best_model.pdparams"))
    dump_config(cfg, os.path.join(folder, "config.yml"))
    return open_run(str(folder))


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory):
    """An untrained resnet20 run: 96 layers, more than the histogram and name-list caps."""
    return untrained_run(tmp_path_factory.mktemp("resnet20"), "configs/resnet20_digits.yml")


def check_png(res, size, panels):
    assert os.path.isfile(res.path)
    with Image.open(res.path) as im:
        assert im.size == size == tuple(res.size)
        gray = np.asarray(im.convert("L"), np.float32)
    assert gray.std() > MIN_PIXEL_STD, f"{res.path} looks blank (pixel std {gray.std():.1f})"
    assert res.panels == panels


def one_line_error(excinfo, *fragments):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


# --------------------------------------------------------------------------- curves

def test_curves_overlay_runs(runs, tmp_path):
    res = vis.plot_curves([runs["sa"], runs["gmlp"]], str(tmp_path / "c.png"))
    check_png(res, (1500, 500), 3)
    assert res.notes == []
    # legend: <config name>/<run name> (both runs are named 'r')
    assert vis.run_labels([runs["sa"], runs["gmlp"]]) == ["cnn_sa_digits/r", "gmlp_digits/r"]
    c = vis.read_curves(runs["sa"])
    assert c["source"] == "visualdl"
    assert list(c["train"]["loss"][0]) == list(range(1, 15))        # 7 steps/epoch x 2 epochs
    assert list(c["eval"]["acc"][0]) == [7, 14]


def test_curves_fall_back_to_metrics_json(runs, tmp_path):
    only = tmp_path / "old_run"
    only.mkdir()
    shutil.copy(os.path.join(runs["sa"], "metrics.json"), only)
    c = vis.read_curves(str(only))
    assert c["source"] == "metrics.json" and c["train"] == {} and list(c["eval"]["loss"][0]) == [7, 14]
    res = vis.plot_curves([str(only)], str(tmp_path / "c.png"))
    check_png(res, (1500, 500), 3)
    # named by the config in metrics.json: the folder above it is pytest's
    assert res.notes[0].startswith("cnn_sa_digits/old_run: ") and "metrics.json" in res.notes[0]


def test_curve_legends_name_config_and_run(runs, tmp_path):
    # two timestamped runs of one config, as tools/train.py names them: not two bare timestamps
    a = tmp_path / "output" / "cnn_sa_digits" / "20261201-120000"
    b = tmp_path / "output" / "cnn_sa_digits" / "20261201-130000"
    for d in (a, b):
        shutil.copytree(runs["sa"], d, ignore=shutil.ignore_patterns("*.pd*", "vis"))
    assert vis.run_labels([str(a), str(b)]) == ["cnn_sa_digits/20261201-120000", "cnn_sa_digits/20261201-130000"]
    res = vis.plot_curves([str(a), str(b)], str(tmp_path / "c.png"))
    check_png(res, (1500, 500), 3)
    # the config comes from the run's config.yml, not from the folder the run was moved into
    moved = tmp_path / "archive" / "20261201-120000"
    shutil.copytree(a, moved)
    assert vis.run_labels([str(moved), runs["gmlp"]]) == ["cnn_sa_digits/20261201-120000", "gmlp_digits/r"]
    os.remove(moved / "config.yml")  # then the config file named in metrics.json
    assert vis.run_labels([str(moved)]) == ["cnn_sa_digits/20261201-120000"]
    os.remove(moved / "metrics.json")  # then the folder above the run
    assert vis.run_labels([str(moved)]) == ["archive/20261201-120000"]
    # the same config and run name in two places: their directories tell them apart
    c = tmp_path / "elsewhere" / "cnn_sa_digits" / "20261201-120000"
    shutil.copytree(a, c)
    assert vis.run_labels([str(a), str(c)]) == [str(a), str(c)]


def test_curves_errors(runs, tmp_path):
    with pytest.raises(UserError) as e:
        vis.plot_curves([str(tmp_path)], str(tmp_path / "c.png"))
    one_line_error(e, str(tmp_path), "no training log")
    parent = os.path.dirname(runs["sa"])
    with pytest.raises(UserError) as e:
        vis.read_curves(parent)
    one_line_error(e, "runs inside it", runs["sa"])


# --------------------------------------------------------------------------- batch, weights

def test_batch_is_one_training_batch(runs, tmp_path):
    run = open_run(runs["sa"])
    res = vis.plot_batch(run.cfg, str(tmp_path / "b.png"))
    check_png(res, (1200, 8 * 150 + 70), 64)                         # batch_size 64: an 8 x 8 grid
    res = vis.plot_batch(run.cfg, str(tmp_path / "b2.png"), epoch=2, max_images=10)
    check_png(res, (1200, 2 * 150 + 70), 10)


def test_batch_is_the_batch_training_used(tmp_path, monkeypatch):
    import utils.trainer as trainer

    seen = []
    build = trainer.build_network

    def recording(cfg, bundle):
        network = build(cfg, bundle)
        network.register_forward_pre_hook(lambda layer, inputs: seen.append(inputs[0].numpy().copy())
                                          if layer.training else None)
        return network

    monkeypatch.setattr(trainer, "build_network", recording)
    # random crops with padding: the batch matches only if the augmentation draws match too
    cfg = cfg_for(tmp_path, "configs/gmlp_digits.yml", "Global.epochs=2", "Data.fraction=0.3",
                  "Transforms.train=[{RandomCrop: {size: 8, padding: 1}}, {Normalize: {}}]")
    train(cfg, print_fn=quiet)
    steps = len(seen) // 2                                           # 7 steps per epoch
    for epoch in (1, 2):
        x, y, _ = vis.training_batch(cfg, epoch)
        np.testing.assert_array_equal(x, seen[(epoch - 1) * steps])


def test_weights(runs, tmp_path):
    run = open_run(runs["sa"])
    res = vis.plot_weights(run.cfg, run.checkpoint, str(tmp_path / "w.png"))
    # a mosaic of the first conv's 32 filters (4 rows of 8); 16 layers with weights:
    # 3 stages x (2 convs, 2 BN, attention conv) + head
    check_png(res, (1500, (4 * 90 + 80) + (3 * 190 + 70)), 1 + 16)
    gm = open_run(runs["gmlp"])
    res = vis.plot_weights(gm.cfg, gm.checkpoint, str(tmp_path / "gw.png"))
    check_png(res, (1500, (4 * 90 + 80) + (4 * 190 + 70)), 1 + 23)   # 64 patch filters (4 rows of 16); 23 layers


def test_weights_cap_histograms_and_mlp_filters(resnet20, tmp_path):
    res = vis.plot_weights(resnet20.cfg, resnet20.checkpoint, str(tmp_path / "w.png"))
    assert res.panels == 1 + MAX_HISTOGRAMS and "24 of" in res.notes[0]
    mlp = untrained_run(tmp_path / "mlp", "configs/mlp_digits.yml")
    res = vis.plot_weights(mlp.cfg, mlp.checkpoint, str(tmp_path / "m.png"))
    # no conv: the first Linear's first 64 hidden units drawn as 8x8 images; 3 Linear layers
    check_png(res, (1500, (4 * 90 + 80) + (1 * 190 + 70)), 1 + 3)


# --------------------------------------------------------------------------- features

def test_features_default_and_chosen_layers(runs, tmp_path):
    run = open_run(runs["sa"])
    res = vis.plot_features(run.cfg, run.checkpoint, runs["image"], str(tmp_path / "f.png"))
    # input + 3 stages x (channel mean + 8 channels)
    check_png(res, (9 * 160, 4 * 160 + 60), 1 + 3 * 9)
    assert res.notes == []                                           # an 8x8 image needs no resize
    res = vis.plot_features(run.cfg, run.checkpoint, runs["big_image"], str(tmp_path / "f2.png"),
                            layers=["stages.0.attn", "head"])
    check_png(res, (9 * 160, 3 * 160 + 60), 1 + 9 + 1)               # head's logits: one bar panel
    assert "resized to 8x8" in res.notes[0]
    gm = open_run(runs["gmlp"])
    assert vis.default_feature_layers(vis.load_network(gm.cfg, gm.checkpoint)[0]) == [f"blocks.{i}" for i in range(4)]
    res = vis.plot_features(gm.cfg, gm.checkpoint, runs["image"], str(tmp_path / "g.png"))
    check_png(res, (9 * 160, 5 * 160 + 60), 1 + 4 * 9)              # tokens laid back on the 4x4 grid


def test_features_errors(runs, tmp_path):
    run = open_run(runs["sa"])
    with pytest.raises(UserError) as e:
        vis.plot_features(run.cfg, run.checkpoint, runs["image"], str(tmp_path / "f.png"), layers=["stages.0.atn"])
    one_line_error(e, "--layers stages.0.atn", "did you mean 'stages.0.attn'", "valid names")
    with pytest.raises(UserError) as e:
        vis.plot_features(run.cfg, run.checkpoint, str(tmp_path / "nope.png"), str(tmp_path / "f.png"))
    one_line_error(e, "nope.png", "no such image file")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError) as e:
        vis.plot_features(run.cfg, run.checkpoint, str(bad), str(tmp_path / "f.png"))
    one_line_error(e, "bad.png", "cannot read this image")
    assert not (tmp_path / "f.png").exists()


def test_unknown_layer_in_a_deep_model_abbreviates_the_list(resnet20):
    network, _ = vis.load_network(resnet20.cfg, resnet20.checkpoint)
    with pytest.raises(UserError) as e:
        vis.check_layers(network, ["stages.1.2.conv"], resnet20.cfg)
    msg = one_line_error(e, "did you mean 'stages.1.2.conv", "top levels shown")
    assert len(msg) < 1000, msg


# --------------------------------------------------------------------------- attention

def test_attention_spatial(runs, tmp_path):
    run = open_run(runs["sa"])
    res = vis.plot_attention(run.cfg, run.checkpoint, str(tmp_path / "a.png"), runs["big_image"])
    check_png(res, (4 * 220, 2 * 220 + 60), 1 + 2 * 3)               # input + (overlay, map) per stage
    with pytest.raises(UserError) as e:
        vis.plot_attention(run.cfg, run.checkpoint, str(tmp_path / "a.png"))
    one_line_error(e, "IMAGE")


def test_attention_gmlp(runs, tmp_path):
    run = open_run(runs["gmlp"])
    res = vis.plot_attention(run.cfg, run.checkpoint, str(tmp_path / "g.png"), runs["image"])
    check_png(res, (3 * 280, 4 * 280 + 60), 3 * 4)                   # 4 SGUs x (weights, centre row, overlay)
    res = vis.plot_attention(run.cfg, run.checkpoint, str(tmp_path / "g2.png"))
    check_png(res, (2 * 330, 4 * 330 + 60), 2 * 4)


def test_attention_needs_an_attention_model(tmp_path):
    cnn = untrained_run(tmp_path / "cnn", "configs/cnn_digits.yml")
    with pytest.raises(UserError) as e:
        vis.plot_attention(cnn.cfg, cnn.checkpoint, str(tmp_path / "a.png"))
    one_line_error(e, "cnn has no attention", "cnn_sa", "gmlp_tiny", "resnet20_sa")


# --------------------------------------------------------------------------- predictions, confusion

def test_predictions(runs, tmp_path):
    run = open_run(runs["sa"])
    res = vis.plot_predictions(run.cfg, run.checkpoint, str(tmp_path / "p.png"))
    check_png(res, (8 * 165, (3 * 165 + 50) + (2 * 165 + 50) + 330), 24 + 16 + 1)
    with pytest.raises(UserError) as e:
        vis.plot_predictions(run.cfg, run.checkpoint, str(tmp_path / "p.png"), split="test")
    one_line_error(e, "--split test", "digits has: train, val")


def test_confused_pairs():
    cm = np.array([[5, 2, 0], [0, 4, 7], [1, 0, 3]])
    assert vis.confused_pairs(cm) == [(1, 2, 7), (0, 1, 2), (2, 0, 1)]
    assert vis.confused_pairs(np.eye(3, dtype=int)) == []


def test_confusion(runs, tmp_path):
    run = open_run(runs["sa"])
    for normalize in (False, True):
        res = vis.plot_confusion(run.cfg, run.checkpoint, str(tmp_path / f"c{normalize}.png"), normalize=normalize)
        check_png(res, (800, 700), 1)


def test_rgb_data(tmp_path):
    """3-channel images: colour batch and filters, an RGB JPEG of another size over the attention maps."""
    from utils.data.synthetic import make_cifar_tarball

    make_cifar_tarball(str(tmp_path / "cifar-10-python.tar.gz"), n_train=200, n_test=20)
    run = untrained_run(tmp_path / "run", "configs/cnn_sa_cifar10.yml", f"Data.data_dir={tmp_path}")
    res = vis.plot_batch(run.cfg, str(tmp_path / "b.png"), max_images=16)
    check_png(res, (1200, 2 * 150 + 70), 16)
    with Image.open(res.path) as im:
        rgb = np.asarray(im.convert("RGB"), np.int16)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() > 50              # colour, not gray
    res = vis.plot_weights(run.cfg, run.checkpoint, str(tmp_path / "w.png"))
    check_png(res, (1500, (4 * 90 + 80) + (3 * 190 + 70)), 1 + 16)
    jpg = tmp_path / "x.jpg"
    Image.fromarray((np.random.RandomState(0).rand(40, 50, 3) * 255).astype(np.uint8)).save(jpg)
    res = vis.plot_attention(run.cfg, run.checkpoint, str(tmp_path / "a.png"), str(jpg))
    check_png(res, (4 * 220, 2 * 220 + 60), 7)
    assert "40x50: resized to 32x32" in res.notes[0]


# --------------------------------------------------------------------------- opening runs

def test_open_run_paths(runs, tmp_path):
    run_dir = runs["sa"]
    best = os.path.join(run_dir, "best_model")
    for path in (run_dir, best, best + ".pdparams"):
        run = open_run(path)
        assert run.run_dir == run_dir and run.checkpoint == best and run.cfg["Arch"]["name"] == "cnn_sa"
    assert open_run(run_dir, "latest").checkpoint == os.path.join(run_dir, "latest")
    with pytest.raises(UserError) as e:
        open_run(run_dir, "epoch_9")
    one_line_error(e, "no epoch_9.pdparams", "checkpoints here: best_model, latest")
    with pytest.raises(UserError) as e:
        open_run(str(tmp_path / "missing"))
    one_line_error(e, "missing: no such run directory or checkpoint")
    with pytest.raises(UserError) as e:
        open_run(str(tmp_path))
    one_line_error(e, "no config.yml", "-c")
    with pytest.raises(UserError) as e:
        open_run(run_dir, config=str(tmp_path / "x.yml"))
    one_line_error(e, "x.yml: no such config file")


# --------------------------------------------------------------------------- the tool

def run_tool(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "tools/visualize.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)


def load_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("visualize_tool", os.path.join(ROOT, "tools", "visualize.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_tool_subprocess_errors_are_one_line_exit_2(tmp_path):
    # Both fail before Paddle is imported, so the subprocesses take well under a second.
    assert_user_error(run_tool("weights", str(tmp_path / "no_run")), "no_run", "no such run directory")
    assert_user_error(run_tool("curves", str(tmp_path)), "no training log")
    assert_user_error(run_tool("batch"), "-c")


def test_tool_in_process(runs, capsys):
    # In-process (no second Paddle import): the tool's default path, its output, its exit status.
    tool = load_tool()
    tool.main(["confusion", os.path.join(runs["sa"], "best_model.pdparams"), "--normalize"])
    out = os.path.join(runs["sa"], "vis", "confusion.png")
    assert f"wrote {out} (800x700 px, 1 panels)" in capsys.readouterr().out and os.path.isfile(out)
    tool.main(["curves", runs["sa"], runs["gmlp"]])
    assert os.path.isfile(os.path.join(runs["sa"], "vis", "curves.png"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        tool.main(["features", runs["sa"], runs["image"], "--layers", "stages.9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: --layers stages.9:") and "valid names" in err[0]
