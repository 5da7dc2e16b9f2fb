"""Data parallel: 2 CPU processes through ``python -m paddle.distributed.launch`` (gloo).

The launched runs check what a user sees: one run directory written by rank 0, the same weights
on every rank (each rank prints a digest of its final weights in its --log_dir/workerlog.N), the
validation metrics of the whole set (metrics.json equals a single-process evaluation of the saved
checkpoint), the same early-stopping decision on every rank, BatchNorm statistics averaged, resume
exact to the bit, and 2 ranks x 64 images = one process x 128 images. The in-process tests check
the pieces: shards, the sampler's shuffles, the aggregation of the evaluation sums.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest

from utils.addons import distributed as dp
from utils.config import load_config
from utils.data import shard_range
from utils.runs import evaluate_run
from utils.training import ranks
from utils.training.evaluate import summarize

# The launched tests run 2 CPU processes over gloo: with a CUDA build the launcher would take GPUs.
cpu_wheel = pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="2 CPU (gloo) processes need the CPU wheel")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANK_LINE = re.compile(r"^rank (\d+)/(\d+): epochs_run (\d+) global_step (\d+) stopped_early (\w+) weights (\w+)$", re.M)


def launch_env():
    # Not CUDA_VISIBLE_DEVICES="": the launcher takes the variable's presence for GPUs, even on the
    # CPU wheel, and fails (IndexError in _build_pod_with_master).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLE_") and k != "CUDA_VISIBLE_DEVICES"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def launch(tmp_path, name, *args, nproc=2, script="tools/train.py"):
    """Run ``script`` on ``nproc`` CPU processes; returns (CompletedProcess, [workerlog text per rank])."""
    log_dir = tmp_path / f"logs_{name}"
    env = launch_env()
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir", str(log_dir),
           script, *args, "-o", "Global.device=cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=240)
    logs = [(log_dir / f"workerlog.{r}").read_text() if (log_dir / f"workerlog.{r}").exists() else ""
            for r in range(nproc)]
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n" + \
        "\n".join(f"--- workerlog.{r}\n{t[-3000:]}" for r, t in enumerate(logs))
    return proc, logs


def rank_lines(logs):
    """{rank: (epochs_run, global_step, stopped_early, digest)} from each rank's own log."""
    out = {}
    for r, text in enumerate(logs):
        found = RANK_LINE.findall(text)
        assert len(found) == 1, f"workerlog.{r}: expected one rank line, got {found}\n{text[-2000:]}"
        rank, world, epochs, step, stopped, digest = found[0]
        assert int(rank) == r and int(world) == len(logs)
        out[r] = (int(epochs), int(step), stopped == "True", digest)
    return out


def digest_of(path):
    return ranks.state_digest(paddle.load(str(path)))  # paddle.load takes str, not PathLike


@cpu_wheel
def test_data_parallel_run_resume_and_exact_metrics(tmp_path):
    out = tmp_path / "out"
    _, logs = launch(tmp_path, "first", "-c", "configs/mlp_digits.yml", "-o", "Global.epochs=3", "-o", f"Global.output_dir={out}")
    # one run directory although both ranks start with a timestamp name
    runs = os.listdir(out / "mlp_digits")
    assert len(runs) == 1, runs
    run = out / "mlp_digits" / runs[0]
    files = set(os.listdir(run))
    assert {"config.yml", "metrics.json", "diagnosis.json", "best_model.pdparams", "latest.pdparams", "latest.pdopt",
            "latest.pdstates"} <= files, files
    assert len([f for f in files if f.startswith("vdlrecords.")]) == 1
    assert not [f for f in files if ".tmp" in f]

    # rank 0 prints, the others only their digest line; the same weights everywhere
    lines = rank_lines(logs)
    assert lines[0] == lines[1] and lines[0][:3] == (3, 36, False)  # 1437 images / (2 x 64) -> 12 steps/epoch
    assert "run directory" in logs[0] and "[Eval][Epoch 3/3] loss:" in logs[0] and "doctor:" in logs[0]
    assert not re.search(r"^(epoch|eval |\[\d{4}/|run directory|model |doctor|best )", logs[1], re.M), logs[1][-2000:]
    # the run restored the best weights at the end: the digest is that file's
    assert lines[0][3] == digest_of(run / "best_model.pdparams")

    m = json.load(open(run / "metrics.json"))
    assert m["world_size"] == 2 and m["global_batch_size"] == 128 and m["epochs_run"] == 3 and m["global_step"] == 36
    assert [h["samples"] for h in m["history"]] == [360] * 3
    # aggregated over the ranks' blocks = one process evaluating the whole validation set
    cfg = load_config(str(run / "config.yml"))
    for name, key in (("latest", "final"), ("best_model", "best")):
        ref = evaluate_run(cfg, str(run / name))
        assert ref["samples"] == m[key]["samples"] == 360
        assert ref["acc"] == m[key]["acc"] and ref["acc_top5"] == m[key]["acc_top5"], (name, ref, m[key])
        assert ref["loss"] == pytest.approx(m[key]["loss"], rel=1e-9, abs=1e-12)

    # VisualDL: one writer (rank 0), every global step once, the images of the gathered logits
    from visualdl import LogReader
    log = [f for f in files if f.startswith("vdlrecords.")][0]
    reader = LogReader(file_path=str(run / log))
    assert [r.id for r in reader.get_data("scalar", "train/loss")] == list(range(1, 37))
    assert "eval/predictions" in reader.get_tags().get("image", [])

    # a 2-process run resumes with 2 processes only (the global batch would change under the LR schedule)
    from utils.errors import UserError
    from utils.trainer import train

    cfg = load_config(str(run / "config.yml"), ["Global.epochs=5"])
    cfg["Global"]["checkpoints"] = str(run)
    with pytest.raises(UserError, match="trained with 2 processes, this one has 1"):
        train(cfg, print_fn=lambda *a: None)

    # resume on 2 processes for 2 more epochs: the same directory and log
    _, logs = launch(tmp_path, "resume", "--resume", str(run), "-o", "Global.epochs=5")
    assert "resuming" in logs[0] and "at epoch 4, step 36" in logs[0]
    lines = rank_lines(logs)
    assert lines[0] == lines[1] and lines[0][:3] == (5, 60, False)
    assert os.listdir(out / "mlp_digits") == runs
    assert len([f for f in os.listdir(run) if f.startswith("vdlrecords.")]) == 1
    m = json.load(open(run / "metrics.json"))
    assert m["epochs_run"] == 5 and m["global_step"] == 60 and [h["epoch"] for h in m["history"]] == [1, 2, 3, 4, 5]


@cpu_wheel
def test_early_stopping_agrees_and_batchnorm_statistics_are_averaged(tmp_path):
    # lr 0 never improves by 0.5: stops at the second evaluation (step 10, inside epoch 1) on both
    # ranks; the CNN's BatchNorm running statistics (per rank, DataParallel does not touch them)
    # are averaged, so the final digests agree although restore_best is off.
    _, logs = launch(tmp_path, "es", "-c", "configs/cnn_digits.yml", "-o", f"Global.output_dir={tmp_path / 'out'}",
                     "-o", "Global.epochs=20", "-o", "Optimizer.lr=0.0", "-o", "LRScheduler.name=constant",
                     "-o", "LRScheduler.warmup_epochs=0", "-o", "EarlyStopping.patience=1",
                     "-o", "EarlyStopping.min_delta=0.5", "-o", "EarlyStopping.restore_best=false",
                     "-o", "Global.eval_every_iters=5", "-o", "VisualDL.enable=false")
    lines = rank_lines(logs)
    assert lines[0] == lines[1], lines
    assert lines[0][:3] == (1, 10, True)
    assert "stopped: acc did not improve" in logs[0]
    run = tmp_path / "out" / "cnn_digits" / os.listdir(tmp_path / "out" / "cnn_digits")[0]
    m = json.load(open(run / "metrics.json"))
    assert m["stopped_early"] and m["global_step"] == 10 and [h["step"] for h in m["history"]] == [5, 10]
    assert lines[0][3] == digest_of(run / "latest.pdparams")


# A user callback that asks rank 1 alone to stop: without AgreeStop rank 0 would wait for rank 1 in
# the next step's gradient all-reduce until gloo times out.
STOP_ONE_RANK = """
import os, sys
sys.path.insert(0, {root!r})
from utils.build import configure_threads
configure_threads(0)
from paddle.callbacks import Callback
from utils.training.callbacks import request_stop
from utils.config import load_config
from utils.data import shard_range
from utils.trainer import train


class StopRank1(Callback):
    seen = 0

    def on_train_batch_end(self, step, logs=None):
        self.seen += 1
        if os.environ["PADDLE_TRAINER_ID"] == "1" and self.seen == 7:
            request_stop(self.model)


args = sys.argv[1:]
train(load_config(os.path.join({root!r}, "configs/mlp_digits.yml"), args[1::2]), callbacks=[StopRank1()])
"""


@cpu_wheel
def test_a_stop_asked_by_one_rank_stops_every_rank(tmp_path):
    script = tmp_path / "stop_one_rank.py"
    script.write_text(STOP_ONE_RANK.format(root=ROOT))
    _, logs = launch(tmp_path, "stop", "-o", f"Global.output_dir={tmp_path / 'out'}", "-o", "VisualDL.enable=false",
                     script=str(script))
    lines = rank_lines(logs)
    assert lines[0] == lines[1] and lines[0][:3] == (1, 7, True)
    run = tmp_path / "out" / "mlp_digits" / os.listdir(tmp_path / "out" / "mlp_digits")[0]
    m = json.load(open(run / "metrics.json"))
    assert m["global_step"] == 7 and m["stop_reason"] == "rank 1 asked to stop"


@cpu_wheel
def test_global_batch_is_batch_times_ranks(tmp_path):
    # 2 ranks x 64 images, in order, no dropout: the same updates as one process with 128 images
    # (DataParallel averages the gradients; the shards of a global batch are disjoint)
    overrides = [f"Global.output_dir={tmp_path}", "Global.epochs=1", "Arch.dropout=0", "DataLoader.shuffle=false",
                 "DataLoader.drop_last=true", "Optimizer.name=SGD", "Optimizer.lr=0.1", "LRScheduler.name=constant",
                 "Global.verbose=0"]
    launch(tmp_path, "dp", "-c", "configs/mlp_digits.yml", *[a for o in overrides for a in ("-o", o)],
           "-o", "Global.run_name=dp", "-o", "DataLoader.batch_size=64")
    from utils.trainer import train

    train(load_config(os.path.join(ROOT, "configs/mlp_digits.yml"),
                      overrides + ["Global.run_name=sp", "DataLoader.batch_size=128"]), print_fn=lambda *a: None)
    a = paddle.load(str(tmp_path / "mlp_digits" / "dp" / "latest.pdparams"))
    b = paddle.load(str(tmp_path / "mlp_digits" / "sp" / "latest.pdparams"))
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=0, atol=1e-5, err_msg=k)
    ma = json.load(open(tmp_path / "mlp_digits" / "dp" / "metrics.json"))
    mb = json.load(open(tmp_path / "mlp_digits" / "sp" / "metrics.json"))
    assert ma["global_step"] == mb["global_step"] == 11 and ma["final"]["acc"] == mb["final"]["acc"]


# ----------------------------------------------------------------------------- in-process pieces

@pytest.mark.parametrize("n,world", [(360, 2), (361, 2), (10, 3), (1, 2), (0, 2), (7, 8)])
def test_shard_range_covers_every_sample_once(n, world):
    blocks = [shard_range(n, r, world) for r in range(world)]
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    sizes = [hi - lo for lo, hi in blocks]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_sums_of_shards_give_the_metrics_of_the_whole_set(label_smoothing):
    rng = np.random.RandomState(0)
    logits = rng.randn(101, 10).astype(np.float32) * 3
    labels = rng.randint(0, 10, 101)
    topk = (1, 5)
    whole = summarize(logits, labels, topk, label_smoothing)
    for world in (1, 2, 3, 7, 150):  # 150 > 101: some blocks are empty
        sums = sum(ranks.shard_sums(logits[lo:hi], labels[lo:hi], topk, label_smoothing)
                   for lo, hi in (shard_range(101, r, world) for r in range(world)))
        got = ranks.metrics_from_sums(sums, topk)
        assert got["samples"] == whole["samples"] == 101
        assert got["acc"] == whole["acc"] and got["acc_top5"] == whole["acc_top5"]
        assert got["loss"] == pytest.approx(whole["loss"], rel=1e-12)
    empty = ranks.metrics_from_sums(np.zeros(4), topk)
    assert empty["samples"] == 0 and np.isnan(empty["loss"])


def test_train_shards_are_disjoint_and_follow_the_epoch():
    from utils.data import build_datasets, build_loaders

    cfg = load_config(os.path.join(ROOT, "configs/mlp_digits.yml"))
    bundle = build_datasets(cfg)
    n = len(bundle.train)
    samplers = [build_loaders(cfg, bundle, r, 2)[0].batch_sampler for r in range(2)]

    def epoch_indices(epoch):
        out = []
        for s in samplers:
            s.set_epoch(epoch)
            out.append([i for batch in s for i in batch])
        return out

    a, b = epoch_indices(5)
    assert len(a) == len(b) == (n + 1) // 2
    assert sorted(a + b) == sorted([*range(n), *range(n % 2)])  # every sample; an odd set pads with sample 0
    assert epoch_indices(5) == [a, b]  # the same epoch, the same shards
    assert epoch_indices(6)[0] != a  # another epoch, another order
    # validation: contiguous blocks in order, no padding
    vals = [build_loaders(cfg, bundle, r, 2)[1].dataset for r in range(2)]
    assert np.array_equal(np.concatenate([v.indices for v in vals]), bundle.val.indices)


def test_a_resumed_run_shuffles_its_epochs_as_the_uninterrupted_one():
    """The sampler's epoch comes from Progress (seed + epoch), not from its own counter that restarts at 0."""
    from utils.data import build_datasets, build_loaders
    from utils.training.callbacks import Progress

    cfg = load_config(os.path.join(ROOT, "configs/mlp_digits.yml"))
    bundle = build_datasets(cfg)

    def orders(epochs_done, epochs):
        sampler = build_loaders(cfg, bundle, 1, 2)[0].batch_sampler
        progress = Progress(7, 5, len(sampler), epochs_done=epochs_done, rank=1)
        shuffle = dp.EpochShuffle(sampler, progress, 7)
        out = []
        for _ in range(epochs):
            progress.on_epoch_begin(0)  # hapi counts the epochs of this fit() from 0
            shuffle.on_epoch_begin(0)
            out.append([i for batch in sampler for i in batch])
            progress.epochs_done += 1
        return out

    full = orders(0, 5)
    assert orders(3, 2) == full[3:]
    assert all(a != b for a, b in zip(full, full[1:]))
