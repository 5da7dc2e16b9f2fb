"""A logging failure never ends a run: VisualDL histograms of near-constant and huge arrays, one warning per
failing part, and a whole run with a broken writer."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests.test_malformed import BASE  # the smallest digits config the corpus starts from


def vdl_logger(tmp_path, **kw):
    from visualdl import LogWriter

    from utils.training import vdl

    warnings = []
    writer = LogWriter(logdir=str(tmp_path))
    return vdl.VisualDLLogger(writer, None, lambda: 0.0, warn=warnings.append, **kw), writer, warnings


def test_near_constant_and_huge_arrays_still_make_histograms(tmp_path):
    """np.histogram (inside add_histogram) fails on these; the logger bins them itself and logs them."""
    from visualdl import LogReader

    from utils.training import vdl

    logger, writer, warnings = vdl_logger(tmp_path, confidence_histogram=True)
    rng = np.random.default_rng(0)
    conf = (1.0 - rng.random(64) * 1e-7).astype(np.float32)          # every prediction ~certain
    tiny = (1e-13 + rng.random(100) * 1e-20).astype(np.float32)       # a collapsed layer's weights
    huge = np.array([1e308, -1e308, 0.0])                               # finite, but max - min overflows
    flat = np.full(10, 3e38, np.float32)                                # constant past 2**52: ±0.5 rounds away
    for values in (conf, tiny, huge, flat):
        with pytest.raises(ValueError, match="Too many bins"), np.errstate(all="ignore"):
            np.histogram(values, bins=vdl.HIST_BUCKETS)  # what VisualDL's add_histogram runs: the failure is real
    probs = np.stack([conf, 1 - conf], axis=1)
    logger.log_confidence(5, probs, np.zeros(64, np.int64))
    params = [("a.weight", "w_0", tiny), ("b.weight", "w_1", huge), ("c.weight", "w_2", flat)]
    logger.log_histograms(5, params, {"w_0": tiny})
    writer.close()
    assert warnings == [] and logger.failed == {}
    reader = LogReader(file_path=os.path.join(tmp_path, os.listdir(tmp_path)[0]))
    recs = {tag: reader.get_data("histogram", tag)[0].histogram for tag in
            ("eval/confidence", "weights/a.weight", "weights/b.weight", "weights/c.weight", "grads/a.weight")}
    assert {t: sum(h.hist) for t, h in recs.items()} == {"eval/confidence": 64, "weights/a.weight": 100,
                                                        "weights/b.weight": 3, "weights/c.weight": 10,
                                                        "grads/a.weight": 100}
    for h in recs.values():
        edges = np.asarray(h.bin_edges)
        assert len(h.hist) in (20, vdl.HIST_BUCKETS) and np.isfinite(edges).all() and (np.diff(edges) > 0).all()
    assert recs["weights/b.weight"].hist[0] == 1 and recs["weights/b.weight"].hist[-1] == 1  # -1e308 and 1e308
    # the span of the near-certain confidences is their own, not numpy's ±0.5 around one value
    assert recs["eval/confidence"].bin_edges[0] >= 0.9999 and recs["eval/confidence"].bin_edges[-1] <= 1.0001


def test_histogram_edges_hold_every_value():
    from utils.training.vdl import histogram_edges

    rng = np.random.default_rng(1)
    for _ in range(2000):
        scale, n = 10.0 ** rng.uniform(-300, 300), int(rng.integers(1, 50))
        v = rng.normal(size=n) * scale * 10.0 ** rng.uniform(-17, 0) + scale * rng.choice([0, 1, -1])
        with np.errstate(over="ignore"):  # float32 overflows to inf past 3.4e38: dropped below
            v = v.astype(rng.choice([np.float32, np.float64]))
        v = v[np.isfinite(v)].astype(np.float64)
        if v.size:
            edges = histogram_edges(v, 30)
            assert len(edges) == 31 and np.isfinite(edges).all() and (np.diff(edges) > 0).all(), v
            assert np.histogram(v, bins=edges)[0].sum() == v.size, v


def test_a_failing_part_warns_once_and_switches_off(tmp_path):
    from utils.training import vdl

    logger, writer, warnings = vdl_logger(tmp_path, confidence_histogram=True, pr_curves=True)

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    writer.add_histogram = broken
    s = 0
    for s in (1, 2, 3):  # what the hooks do: each part through guarded()
        logger.guarded("histograms", logger.log_histograms, s, [("fc.weight", "w_0", np.ones(3))])
        logger.guarded("scalars", logger.log_eval_scalars, {"loss": 0.5, "acc": 0.9, "step": s})
        logger.log_eval_details(s, np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([0, 1]))
    assert list(logger.failed) == ["histograms", "confidence histograms"] and len(warnings) == 2
    assert set(logger.failed) <= set(vdl.PARTS)
    assert warnings[0] == ("warning: VisualDL histograms could not be logged (OSError: [Errno 28] No space left on "
                           "device); no more histograms in this run's log, training continues")
    writer.close()
    from visualdl import LogReader

    reader = LogReader(file_path=os.path.join(tmp_path, os.listdir(tmp_path)[0]))
    assert [r.id for r in reader.get_data("scalar", "eval/acc")] == [1, 2, 3]  # the other parts carried on
    assert [r.id for r in reader.get_data("pr_curve", "pr_curve/0")] == [1, 2, 3]


def test_training_survives_a_broken_visualdl(tmp_path, monkeypatch):
    """Every writer call that can fail raises: the run ends normally, one warning per part."""
    from visualdl import LogWriter

    from utils.config import load_config
    from utils.trainer import train

    def broken(self, *a, **k):
        raise ValueError("Too many bins for data range. Cannot create 30 finite-sized bins.")

    for name in ("add_histogram", "add_image", "add_pr_curve", "add_hparams"):
        monkeypatch.setattr(LogWriter, name, broken)
    path = os.path.join(str(tmp_path), "c.yml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(BASE.replace("VisualDL: {enable: false}", "VisualDL: {enable: true}"))
    cfg = load_config(path, [f"Global.output_dir={tmp_path}/out", "Global.epochs=2", "Data.fraction=0.2"])
    printed = []
    metrics = train(cfg, print_fn=printed.append)
    assert metrics["epochs_run"] == 2 and metrics["final"] is not None
    # the run's own output (console and, through print_fn, whatever the caller collects)
    warned = [ln for ln in printed if ln.startswith("warning: VisualDL")]
    parts = sorted(ln.split("warning: VisualDL ", 1)[1].split(" could not", 1)[0] for ln in warned)
    assert parts == sorted(["PR curves", "confidence histograms", "hparams", "histograms", "prediction images"]), warned
    assert os.path.isfile(os.path.join(metrics["run_dir"], "metrics.json"))


def test_collapsed_model_eval_details_log_without_warnings(tmp_path):
    """After divergence every prediction is certain (float32 confidences ~1.0) and the gradients ~1e-13:
    confidence histograms, PR curves and gradient histograms of such a model still log, no part switches off."""
    logger, writer, warnings = vdl_logger(tmp_path, confidence_histogram=True, pr_curves=True)
    logits = np.zeros((64, 10), np.float32)
    logits[:, 3] = 60.0                                   # softmax: 1.0 in float32 for class 3, ~1e-27 elsewhere
    labels = np.arange(64) % 10
    grads = (1e-13 * (1 + np.random.default_rng(0).random(50) * 1e-6)).astype(np.float32)
    for s in (1, 2):
        logger.log_eval_details(s, logits, labels)
        logger.guarded("histograms", logger.log_histograms, s, [("fc.weight", "w_0", grads)], {"w_0": grads})
    writer.close()
    assert warnings == [] and logger.failed == {}
    from visualdl import LogReader

    reader = LogReader(file_path=os.path.join(tmp_path, os.listdir(tmp_path)[0]))
    assert [r.id for r in reader.get_data("pr_curve", "pr_curve/3")] == [1, 2]
    assert sum(reader.get_data("histogram", "eval/confidence")[0].histogram.hist) == 64
    assert sum(reader.get_data("histogram", "grads/fc.weight")[0].histogram.hist) == 50


def test_training_survives_a_visualdl_log_that_cannot_be_opened(tmp_path, monkeypatch):
    """The writer itself fails to open: one warning, no curves, the run trains and writes metrics.json."""
    import json

    import utils.trainer as trainer
    from utils.config import load_config

    def refuse(run_dir):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer, "open_writer", refuse)
    path = os.path.join(str(tmp_path), "c.yml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(BASE.replace("VisualDL: {enable: false}", "VisualDL: {enable: true}"))
    cfg = load_config(path, [f"Global.output_dir={tmp_path}/out", "Global.epochs=1", "Data.fraction=0.2"])
    printed = []
    metrics = trainer.train(cfg, print_fn=printed.append)
    warned = [ln for ln in printed if ln.startswith("warning: VisualDL is off")]
    assert len(warned) == 1 and "No space left on device" in warned[0]
    saved = json.load(open(os.path.join(metrics["run_dir"], "metrics.json")))
    assert saved["status"] == "finished" and saved["epochs_run"] == 1
