"""VisualDL logging (utils/training/vdl.py): histograms, prediction images, confidence, PR curves, hparams.

Two tiny digits runs (the MLP, 2 epochs) are read back with ``visualdl.LogReader``: one with
the defaults, one with every switch off. The rest are unit tests of the pieces.
"""
import io
import os

import numpy as np
import paddle
import pytest
from PIL import Image

from utils.config import load_config
from utils.errors import ConfigError
from utils.trainer import train
from utils.training import evaluate, vdl, vdl_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OFF = ["VisualDL.histograms_every_epochs=0", "VisualDL.sample_images=0", "VisualDL.confidence_histogram=false",
       "VisualDL.pr_curves=false", "VisualDL.hparams=false"]


def cfg_for(tmp_path, *overrides):
    return load_config(os.path.join(ROOT, "configs/mlp_digits.yml"),
                       [f"Global.output_dir={tmp_path}", "Global.verbose=0", "Global.epochs=2", *overrides])


def reader_of(run_dir):
    from visualdl import LogReader

    logs = [f for f in os.listdir(run_dir) if f.startswith("vdlrecords.")]
    assert len(logs) == 1
    return LogReader(file_path=os.path.join(run_dir, logs[0]))


def tags(reader):
    return {comp: set(t) for comp, t in reader.get_tags().items()}


def param_names_and_sizes(cfg):
    from utils.build import build_network
    from utils.data import build_datasets

    net = build_network(cfg, build_datasets(cfg))
    return {n: int(np.prod(p.shape)) for n, p in net.named_parameters()}


def nonzero_count(hist, edges):
    """Values counted in bins whose interval excludes 0 (an all-zero tensor has none)."""
    edges = np.asarray(edges)
    away = (edges[:-1] > 0) | (edges[1:] < 0)
    return int(np.asarray(hist)[away].sum())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("vdl")
    passes = []
    real_predict = evaluate.predict  # every pass over a loader goes through it

    def counting_predict(*a, **k):
        passes.append(1)
        return real_predict(*a, **k)

    evaluate.predict = counting_predict  # module scope: monkeypatch is function-scoped
    try:
        on = train(cfg_for(out, "Global.run_name=on"), print_fn=lambda *a: None)
        on_passes = len(passes)
    finally:
        evaluate.predict = real_predict
    off = train(cfg_for(out, "Global.run_name=off", *OFF), print_fn=lambda *a: None)
    return {"on": on, "off": off, "on_passes": on_passes, "cfg": cfg_for(out)}


def test_one_validation_pass_per_evaluation(runs):
    assert runs["on_passes"] == len(runs["on"]["history"]) == 2


def test_weight_and_grad_histograms_per_parameter(runs):
    m = runs["on"]
    reader = reader_of(m["run_dir"])
    spe = m["global_step"] // 2
    sizes = param_names_and_sizes(runs["cfg"])
    assert len(sizes) == 6  # 3 Linear layers: weight and bias each
    for name, size in sizes.items():
        for kind in ("weights", "grads"):
            recs = reader.get_data("histogram", f"{kind}/{name}")
            assert [r.id for r in recs] == [spe, 2 * spe], (kind, name)  # last step of each epoch
            for r in recs:
                h = r.histogram
                assert len(h.hist) == vdl.HIST_BUCKETS and sum(h.hist) == size, (kind, name)
                # a real step's gradient: every trainable tensor has non-zero entries
                assert nonzero_count(h.hist, h.bin_edges) > 0, (kind, name, list(h.bin_edges))
    # the weights moved between the two records (the grads were applied)
    w = reader.get_data("histogram", f"weights/{next(iter(sizes))}")
    assert list(w[0].histogram.bin_edges) != list(w[1].histogram.bin_edges)


def test_eval_images_confidence_and_pr_curves(runs):
    m = runs["on"]
    reader = reader_of(m["run_dir"])
    steps = [h["step"] for h in m["history"]]
    images = reader.get_data("image", "eval/predictions")
    assert [r.id for r in images] == steps
    img = np.asarray(Image.open(io.BytesIO(images[-1].image.encoded_image_string)).convert("RGB"))
    expected = vdl_images.draw_predictions([np.zeros((8, 8, 1), np.uint8)] * 16, [0] * 16, [0] * 16, [1.0] * 16)
    assert img.shape == expected.shape == (200, 576, 3)  # 16 samples: 2 rows of 8 tiles
    assert img.std() > 10
    for tag in ("eval/confidence", "eval/confidence_correct"):
        recs = reader.get_data("histogram", tag)
        assert [r.id for r in recs] == steps
    assert sum(reader.get_data("histogram", "eval/confidence")[-1].histogram.hist) == m["final"]["samples"]
    pr = {t for t in tags(reader)["pr_curve"]}
    assert pr == {f"pr_curve/{c}" for c in range(10)}
    rec = reader.get_data("pr_curve", "pr_curve/3")
    assert [r.id for r in rec] == steps
    curve = rec[-1].pr_curve
    from utils.data import build_datasets

    val_labels = build_datasets(runs["cfg"]).val.labels
    assert curve.TP[0] + curve.FN[0] == (val_labels == 3).sum()  # lowest threshold: every class-3 image
    assert curve.TP[0] + curve.FP[0] == len(val_labels) and len(curve.precision) == vdl.PR_THRESHOLDS


def test_hparams_recorded_with_run_values(runs):
    m = runs["on"]
    reader = reader_of(m["run_dir"])
    recs = reader.get_data("hyper_parameters", "hparam")
    assert len(recs) == 1
    hp = {}
    for info in recs[0].hparam.hparamInfos:
        hp[info.name] = getattr(info, info.WhichOneof("type"))
    assert hp["model"] == "mlp" and hp["optimizer"] == "Adam" and hp["schedule"] == "cosine"
    assert hp["lr"] == pytest.approx(1e-3) and hp["batch_size"] == 64 and hp["epochs"] == 2
    assert hp["weight_decay"] == 0.0 and hp["grad_clip"] == "none" and hp["arch.hidden"] == "[128, 64]"
    metrics = [i.name for i in recs[0].hparam.metricInfos]
    assert {"hparam/final_acc", "hparam/final_loss", "hparam/best_acc", "hparam/best_loss"} <= set(metrics)
    for name in metrics:  # VisualDL's HParams view shows the last value of each metric's scalar
        assert reader.get_data("scalar", name), name
    best = reader.get_data("scalar", "hparam/best_acc")[-1].value
    final = reader.get_data("scalar", "hparam/final_loss")[-1].value
    assert best == pytest.approx(m["best"]["acc"]) and final == pytest.approx(m["final"]["loss"])


def test_switches_off_leave_only_scalars(runs):
    t = tags(reader_of(runs["off"]["run_dir"]))
    assert {"train/loss", "train/lr", "eval/acc", "eval/loss"} <= t["scalar"]
    assert not any(tag.startswith("hparam/") for tag in t["scalar"])
    for comp in ("histogram", "image", "pr_curve", "hyper_parameters"):
        assert not t.get(comp), comp


class FakeProgress:
    def __init__(self, epoch, epoch_step, steps_per_epoch=10, total_epochs=5):
        self.epoch, self.epoch_step = epoch, epoch_step
        self.steps_per_epoch, self.total_epochs = steps_per_epoch, total_epochs

    @property
    def is_last_epoch(self):
        return self.epoch + 1 >= self.total_epochs


@pytest.mark.parametrize("every,due_epochs", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (0, [])])
def test_histograms_due_on_last_step_of_every_nth_and_last_epoch(every, due_epochs):
    due = []
    for epoch in range(5):
        for step in range(10):
            logger = vdl.VisualDLLogger(None, FakeProgress(epoch, step), lambda: 0.0, histograms_every_epochs=every)
            if logger.histograms_due():
                due.append((epoch + 1, step))
    assert due == [(e, 9) for e in due_epochs]


@pytest.mark.parametrize("clip", [None, "global_norm"])
def test_grad_capture_gets_the_step_gradient_and_delegates(clip):
    """The captured gradient equals the one backward computes; the configured clip still applies."""
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.ReLU(), paddle.nn.Linear(8, 3))
    inner = paddle.nn.ClipGradByGlobalNorm(1e-3) if clip else None
    opt = paddle.optimizer.SGD(learning_rate=0.5, parameters=net.parameters(), grad_clip=inner)
    model = paddle.Model(net)
    model.prepare(opt, paddle.nn.CrossEntropyLoss())
    x = paddle.randn([16, 6])
    y = paddle.randint(0, 3, [16, 1])

    paddle.nn.CrossEntropyLoss()(net(x), y).backward()
    expected = {p.name: p.grad.numpy().copy() for p in net.parameters()}
    before = {p.name: p.numpy().copy() for p in net.parameters()}
    net.clear_gradients()

    logger = vdl.VisualDLLogger(None, None, lambda: 0.0)
    logger.set_model(model)
    logger._install_capture()
    assert isinstance(opt._grad_clip, vdl.GradCapture)
    model.train_batch([x], [y])
    grads = logger._remove_capture()
    assert opt._grad_clip is inner  # restored after the one step
    assert grads.keys() == expected.keys()
    for name, g in grads.items():
        np.testing.assert_allclose(g, expected[name], rtol=1e-5, atol=1e-7, err_msg=name)
        assert np.abs(g).max() > 0
    total = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in expected.values()))
    scale = min(1.0, 1e-3 / total) if clip else 1.0
    for p in net.parameters():  # SGD applied lr * (clipped) gradient: the inner clip ran
        np.testing.assert_allclose(p.numpy(), before[p.name] - 0.5 * scale * expected[p.name], rtol=1e-4, atol=1e-6)


def test_draw_predictions_shape_frames_and_text():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
              rng.integers(0, 256, (50, 20, 3), dtype=np.uint8), rng.integers(0, 256, (12, 12), dtype=np.uint8),
              rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)]
    labels, preds = [0, 1, 2, 3, 4], [0, 2, 2, 3, 1]
    img = vdl_images.draw_predictions(images, labels, preds, [0.9, 0.4, 0.8, 0.99, 0.3],
                               class_names=["zero", "one", "two", "three", "a-very-long-class-name"], tile=48, cols=3)
    cell_w, cell_h = 48 + 8, 48 + 8 + 2 * 13 + 2
    assert img.shape == (2 * cell_h, 3 * cell_w, 3) and img.dtype == np.uint8
    assert img.std() > 20  # not blank
    # frames: the top-left frame pixel of each tile is green (right) or red (wrong)
    for i, ok in enumerate(p == label for p, label in zip(preds, labels)):
        x0, y0 = (i % 3) * cell_w, (i // 3) * cell_h
        r, g, b = img[y0 + 2, x0 + 2]
        assert (g > r) if ok else (r > g), (i, r, g, b)
    # a wrong tile has a second caption line, a right one does not
    caption2 = lambda i: img[(i // 3) * cell_h + 4 + 48 + 4 + 13:(i // 3 + 1) * cell_h, (i % 3) * cell_w:(i % 3 + 1) * cell_w]  # noqa: E731
    assert (caption2(1) < 200).any() and not (caption2(0) < 200).any()
    with pytest.raises(ValueError):
        vdl_images.draw_predictions([], [], [], [])


def test_pick_samples_takes_classes_in_turn():
    labels = np.array([2, 2, 0, 1, 0, 1, 2, 0])
    assert vdl_images.pick_samples(labels, 5) == [2, 3, 0, 4, 5]
    assert sorted(vdl_images.pick_samples(labels, 100)) == list(range(8))


def test_class_tags_are_safe_and_unique():
    assert vdl._class_tags(["cat", "dog"], 2) == ["pr_curve/cat", "pr_curve/dog"]
    assert vdl._class_tags(["50%", "50_"], 2) == ["pr_curve/0_50_", "pr_curve/1_50_"]
    assert vdl._class_tags(None, 2) == ["pr_curve/0", "pr_curve/1"]


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="histograms_every_epochs"):
        vdl.VisualDLLogger(None, None, lambda: 0.0, histograms_every_epochs=-1)
    with pytest.raises(ConfigError, match="sample_images"):
        vdl.VisualDLLogger(None, None, lambda: 0.0, sample_images=-2)


def test_logger_still_importable_from_callbacks():
    from utils.training.vdl import VisualDLLogger

    assert VisualDLLogger is vdl.VisualDLLogger


def test_eval_details_survive_nan_logits(tmp_path):
    """A diverged model's NaN logits: the non-finite rows are left out, nothing raises."""
    import warnings

    from visualdl import LogWriter

    with LogWriter(logdir=str(tmp_path)) as w:
        logger = vdl.VisualDLLogger(w, None, lambda: 0.0, confidence_histogram=True, pr_curves=True)
        logits = np.random.default_rng(0).normal(size=(20, 3))
        logits[:5] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            logger.log_eval_details(7, logits, np.arange(20) % 3)
            logger.log_eval_details(8, np.full((4, 3), np.nan), np.arange(4) % 3)
    reader = reader_of(str(tmp_path))
    assert sum(reader.get_data("histogram", "eval/confidence")[0].histogram.hist) == 15
    assert [r.id for r in reader.get_data("pr_curve", "pr_curve/0")] == [7]
