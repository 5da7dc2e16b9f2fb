"""Console lines (PaddleClas style, fake clock) and the run's train.log."""
import os
import time

import paddle

from utils.config import load_config
from utils.training.callbacks import Progress
from utils.training.console import ConsoleLogger, RunLog, hms
from utils.training.evaluate import LastEval

WALL = 1_700_000_000.0
STAMP = "[" + time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(WALL)) + "] "


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def advance(self, s):
        self.t += s


def quiet(*a, **k):
    pass


def scripted(total_epochs, steps, log_every, best=None):
    """A logger driven by hand: returns (logger, progress, clock, printed lines)."""
    lines, clock = [], Clock()
    progress = Progress(seed=0, total_epochs=total_epochs, steps_per_epoch=steps)
    log = ConsoleLogger(progress, lambda: 0.05, log_every, 1, lines.append, "acc", best_fn=lambda: best,
                        clock=clock, wall=lambda: WALL)
    log.on_train_begin()
    return log, progress, clock, lines


def step(log, progress, clock, loss, running_acc, reader=5.0, compute=25.0, batch=10, inside=None):
    """One training step: ``reader`` s waiting for the batch, ``compute`` s training it, then ``inside()``
    (an evaluation run by the callbacks before the logger's hook)."""
    clock.advance(reader)
    log.on_train_batch_begin(0)
    clock.advance(compute)
    progress.on_train_batch_end(0)
    if inside:
        inside()
    log.on_train_batch_end(0, {"loss": [loss], "acc": running_acc, "batch_size": batch, "step": 0})


def begin_epoch(log, progress):
    progress.on_epoch_begin(progress.epochs_done)
    log.on_epoch_begin(progress.epochs_done)


def end_epoch(log, progress):
    progress.on_epoch_end(0)
    log.on_epoch_end(0)


def test_train_lines_give_window_means_costs_and_the_run_eta():
    log, p, clock, lines = scripted(total_epochs=3, steps=4, log_every=2)
    begin_epoch(log, p)
    # running accuracy 5/10, 12/20, 18/30, 26/40: the windows' own accuracies are 12/20 and 14/20
    for loss, acc in ((1.0, 0.5), (0.5, 0.6), (0.4, 0.6), (0.2, 0.65)):
        step(log, p, clock, loss, acc)
    assert lines[0] == (STAMP + "[Train][Epoch 1/3][Iter 2/4] lr: 0.05, loss: 0.7500, top1: 0.6000, batch_cost: 30.000s, "
                        "reader_cost: 5.0000s, ips: 0.3 samples/s, eta: 0:05:00 (epoch 0:01:00)")
    # 10 steps left at 30 s; the epoch's last step: nothing left in it
    assert lines[1] == (STAMP + "[Train][Epoch 1/3][Iter 4/4] lr: 0.05, loss: 0.3000, top1: 0.7000, batch_cost: 30.000s, "
                        "reader_cost: 5.0000s, ips: 0.3 samples/s, eta: 0:04:00 (epoch 0:00:00)")
    # the [Avg] line comes at the last step, before the epoch-end evaluation prints
    assert lines[2] == (STAMP + "[Train][Epoch 1/3][Avg] loss: 0.5250, top1: 0.6500, batch_cost: 30.000s, "
                        "reader_cost: 5.0000s, ips: 0.3 samples/s, epoch_time: 0:02:00")
    clock.advance(60.0)  # a 60 s evaluation after epoch 1
    log.on_eval_end({"loss": 0.25, "acc": 0.9, "epoch": 1, "step": 4, "eval_time": 60.0, "samples": 360})
    end_epoch(log, p)
    assert len(lines) == 4  # on_epoch_end does not repeat the [Avg] line
    begin_epoch(log, p)
    step(log, p, clock, 0.3, 0.8)
    step(log, p, clock, 0.1, 0.9)
    # the run's eta counts the evaluation: (4 x 30 + 60 + 2 x 30) s / 6 steps = 40 s a step, 6 steps left;
    # the epoch's: 30 s a step, 2 left
    assert lines[4].endswith("eta: 0:04:00 (epoch 0:01:00)"), lines[4]
    # hapi's accuracy restarts each epoch: the first window's is the running value
    assert "[Epoch 2/3][Iter 2/4]" in lines[4] and "loss: 0.2000, top1: 0.9000, batch_cost: 30.000s" in lines[4]


def test_evaluation_inside_a_step_is_not_training_time():
    log, p, clock, lines = scripted(total_epochs=1, steps=4, log_every=4)
    begin_epoch(log, p)

    def evaluation():
        clock.advance(90.0)
        log.on_eval_end({"loss": 0.5, "acc": 0.8, "epoch": 1, "step": p.global_step, "eval_time": 90.0})

    for i in range(4):
        step(log, p, clock, 1.0, 0.5, inside=evaluation if i == 1 else None)
    assert lines[0] == STAMP + "[Eval][Epoch 1/1][Iter 2/4] loss: 0.5000, top1: 0.8000, eval_cost: 90.0s"
    assert "batch_cost: 30.000s, reader_cost: 5.0000s" in lines[1], lines[1]


def test_eval_line_shows_the_best_so_far_and_regression_metrics():
    log, p, clock, lines = scripted(total_epochs=5, steps=4, log_every=2, best={"acc": 0.93, "epoch": 2, "loss": 0.2})
    begin_epoch(log, p)
    log.on_eval_end({"loss": 0.3, "acc": 0.91, "acc_top5": 0.99, "epoch": 1, "step": 0, "eval_time": 1.25,
                     "samples": 360})
    assert lines[-1] == STAMP + ("[Eval][Epoch 1/5] loss: 0.3000, top1: 0.9100, top5: 0.9900, best top1: 0.9300 "
                                 "(epoch 2), eval_cost: 1.2s")
    reg = ConsoleLogger(p, lambda: 0.1, 2, 1, lines.append, "mae", best_fn=lambda: {"mae": 3.5, "epoch": 1},
                        clock=clock, wall=lambda: WALL)
    reg.on_eval_end({"loss": 0.8, "mae": 4.0, "rmse": 5.0, "epoch": 1, "step": 4, "eval_time": 0.5})
    assert lines[-1] == STAMP + "[Eval][Epoch 1/5] loss: 0.8000, mae: 4.0000, rmse: 5.0000, best mae: 3.5000 (epoch 1), eval_cost: 0.5s"


def test_short_epochs_still_print_and_verbose_0_prints_nothing():
    log, p, clock, lines = scripted(total_epochs=2, steps=3, log_every=20)
    for _ in range(2):
        begin_epoch(log, p)
        for _ in range(3):
            step(log, p, clock, 1.0, 0.5)
        end_epoch(log, p)
    assert [line[len(STAMP):].split(" loss")[0] for line in lines] == ["[Train][Epoch 1/2][Avg]", "[Train][Epoch 2/2][Avg]"]
    # an epoch cut short (early stopping) gets its line from on_epoch_end
    log, p, clock, lines = scripted(total_epochs=2, steps=30, log_every=20)
    begin_epoch(log, p)
    step(log, p, clock, 1.0, 0.5)
    end_epoch(log, p)
    assert len(lines) == 1 and "[Avg] loss: 1.0000" in lines[0]
    log.verbose = 0
    begin_epoch(log, p)
    step(log, p, clock, 1.0, 0.5)
    end_epoch(log, p)
    assert len(lines) == 1


def test_eval_announces_itself_when_it_may_be_slow():
    log, p, clock, lines = scripted(total_epochs=2, steps=4, log_every=2)
    begin_epoch(log, p)
    evaluate = log.announce(lambda: {"loss": 1.0}, 5000)
    assert evaluate() == {"loss": 1.0}
    assert lines == [STAMP + "[Eval][Epoch 1/2] evaluating 5,000 samples ..."]
    log.on_eval_end({"loss": 1.0, "epoch": 1, "step": 0, "eval_time": 0.2})
    evaluate()  # the last one took 0.2 s: no announcement
    assert len(lines) == 2
    log.on_eval_end({"loss": 1.0, "epoch": 1, "step": 0, "eval_time": 30.0})
    evaluate()
    assert len(lines) == 4 and lines[3].endswith("evaluating 5,000 samples ...")


class SlowNet(paddle.nn.Layer):
    """Every forward pass takes ``costs[i]`` seconds of the scripted clock (the last one repeats)."""

    def __init__(self, clock, costs):
        super().__init__()
        self.clock, self.costs, self.calls = clock, list(costs), 0

    def forward(self, x):
        self.clock.advance(self.costs[min(self.calls, len(self.costs) - 1)])
        self.calls += 1
        return paddle.zeros([x.shape[0], 3])


def slow_eval(clock, batches, costs, batch=32, tta="none"):
    data = [(paddle.zeros([batch, 1, 4, 4]), paddle.zeros([batch], "int64")) for _ in range(batches)]
    return LastEval(SlowNet(clock, costs), data, tta=tta)


def progress_lines(lines):
    return [line[len(STAMP):] for line in lines if "[Iter" in line]


def test_a_long_evaluation_prints_progress_every_5_s_with_its_eta(tmp_path):
    log, p, clock, lines = scripted(total_epochs=2, steps=4, log_every=2)
    log.print = RunLog(lines.append, lambda: str(tmp_path))  # train.log gets them as every other line
    begin_epoch(log, p)
    ev = slow_eval(clock, 20, [1.0])
    evaluate = log.announce(ev, 640, ev)
    assert evaluate()["samples"] == 640
    # 1 s a batch of 32: a line at 5, 10 and 15 s; none at the last batch (the result line follows)
    assert progress_lines(lines) == [
        "[Eval][Epoch 1/2][Iter 5/20] batch_cost: 1.000s, ips: 32.0 samples/s, eta: 0:00:15",
        "[Eval][Epoch 1/2][Iter 10/20] batch_cost: 1.000s, ips: 32.0 samples/s, eta: 0:00:10",
        "[Eval][Epoch 1/2][Iter 15/20] batch_cost: 1.000s, ips: 32.0 samples/s, eta: 0:00:05"]
    assert lines[0].endswith("evaluating 640 samples ...") and ev.on_batch is None
    assert (tmp_path / "train.log").read_text().splitlines() == lines
    # 0.41 s a batch: 12 batches are 4.92 s, so the first line comes after 13 (5.33 s), the next 13 later
    log.last_eval_s = 1.0  # no announcement this time
    lines.clear()
    ev = slow_eval(clock, 30, [0.41])
    log.announce(ev, 960, ev)()
    assert progress_lines(lines) == [
        "[Eval][Epoch 1/2][Iter 13/30] batch_cost: 0.410s, ips: 78.0 samples/s, eta: 0:00:07",
        "[Eval][Epoch 1/2][Iter 26/30] batch_cost: 0.410s, ips: 78.0 samples/s, eta: 0:00:02"]
    # uneven batches: the mean so far; at most one line per 5 s however the batches fall
    lines.clear()
    ev = slow_eval(clock, 10, [4.0, 6.0, 0.5, 0.5, 4.5, 0.1])  # batches end at 4, 10, 10.5, 11, 15.5, 15.6, ... s
    log.announce(ev, 320, ev)()
    assert progress_lines(lines) == [
        "[Eval][Epoch 1/2][Iter 2/10] batch_cost: 5.000s, ips: 6.4 samples/s, eta: 0:00:40",
        "[Eval][Epoch 1/2][Iter 5/10] batch_cost: 3.100s, ips: 10.3 samples/s, eta: 0:00:16"]


def test_a_quick_evaluation_prints_no_progress_and_passes_restart_their_counts():
    log, p, clock, lines = scripted(total_epochs=1, steps=4, log_every=2)
    begin_epoch(log, p)
    ev = slow_eval(clock, 5, [0.495], tta="flip")  # 2 forward passes a batch: 4.95 s
    log.announce(ev, 160, ev)()
    assert lines == [STAMP + "[Eval][Epoch 1/1] evaluating 160 samples with test-time augmentation flip ..."]
    assert ev.network.calls == 10
    ev = slow_eval(clock, 5, [1.0])  # the 5 s mark is the last batch: the result line follows at once
    log.announce(ev, 160, ev)()
    assert len(lines) == 2 and not progress_lines(lines)
    # two passes in one evaluation (EMA: the averaged weights, then the raw ones), 6 batches of 1 s each
    ev = slow_eval(clock, 6, [1.0])
    log.announce(lambda: (ev(), ev())[1], 192, ev)()
    assert progress_lines(lines) == [
        "[Eval][Epoch 1/1][Iter 5/6] batch_cost: 1.000s, ips: 32.0 samples/s, eta: 0:00:01",
        "[Eval][Epoch 1/1][Iter 4/6] batch_cost: 1.000s, ips: 32.0 samples/s, eta: 0:00:02"]
    log.verbose = 0
    lines.clear()
    ev = slow_eval(clock, 20, [1.0])
    log.announce(ev, 640, ev)()
    assert lines == []


def test_run_log_keeps_early_lines_and_appends(tmp_path):
    shown, where = [], {"dir": None}
    log = RunLog(lambda *a, **k: shown.append((a, k)), lambda: where["dir"])
    log("model: x")  # before the run directory exists: kept
    assert not (tmp_path / "train.log").exists()
    where["dir"] = str(tmp_path)
    log("a", 2, sep="=")
    assert shown == [(("model: x",), {}), (("a", 2), {"sep": "="})]  # print_fn gets the arguments as given
    again = RunLog(quiet, lambda: str(tmp_path))  # a resumed run appends
    again("resumed")
    assert (tmp_path / "train.log").read_text() == "model: x\na=2\nresumed\n"


def test_a_failing_train_log_warns_once_and_printing_goes_on(tmp_path):
    shown = []
    log = RunLog(shown.append, lambda: str(tmp_path / "missing"))
    for i in range(3):
        log(f"line {i}")
    warnings = [s for s in shown if s.startswith("warning:")]
    assert len(warnings) == 1 and "train.log" in warnings[0] and "missing" in warnings[0]
    assert [s for s in shown if s.startswith("line")] == ["line 0", "line 1", "line 2"]


def test_hms():
    assert [hms(0), hms(59.6), hms(3600 * 30 + 61), hms(-5), hms(float("nan"))] == \
        ["0:00:00", "0:01:00", "30:01:01", "0:00:00", "?"]


def cfg_for(tmp_path, *over):
    return load_config("configs/mlp_digits.yml", [f"Global.output_dir={tmp_path}", "Global.run_name=r",
                                                  "VisualDL.enable=false", "Doctor.enable=false", *over])


def test_a_run_writes_its_lines_to_train_log_and_a_resume_appends(tmp_path):
    from utils.trainer import train  # imports paddle

    lines = []
    # 1437 train images / batch 64 -> 23 steps an epoch, fewer than log_every: [Avg] lines only
    m = train(cfg_for(tmp_path, "Global.epochs=1", "Global.log_every_iters=1000", "Global.verbose=1"),
              print_fn=lines.append)
    path = os.path.join(m["run_dir"], "train.log")
    assert open(path).read().splitlines() == lines
    assert sum("[Train][Epoch 1/1][Avg]" in line for line in lines) == 1
    assert sum("[Eval][Epoch 1/1] loss:" in line and "best top1:" in line for line in lines) == 1
    cfg = load_config(os.path.join(m["run_dir"], "config.yml"), ["Global.epochs=2", "Global.verbose=1"])
    cfg["Global"]["checkpoints"] = m["run_dir"]
    more = []
    train(cfg, print_fn=more.append)
    assert open(path).read().splitlines() == lines + more
    assert any("[Train][Epoch 2/2][Avg]" in line for line in more)


def test_a_run_survives_an_unwritable_train_log(tmp_path, monkeypatch):
    from utils.trainer import train  # imports paddle

    monkeypatch.setattr(RunLog, "NAME", os.path.join("no_such_dir", "train.log"))
    lines = []
    m = train(cfg_for(tmp_path, "Global.epochs=2", "Global.verbose=1"), print_fn=lines.append)
    assert m["epochs_run"] == 2 and os.path.isfile(os.path.join(m["run_dir"], "metrics.json"))
    warnings = [line for line in lines if "train.log" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: could not write"), warnings
