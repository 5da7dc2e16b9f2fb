"""End-to-end: training on digits, resume equivalence, run-directory contents, tool errors."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from tool_asserts import assert_user_error

from utils.config import load_config
from utils.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cfg_for(tmp_path, config="configs/mlp_digits.yml", *overrides):
    return load_config(os.path.join(ROOT, config),
                       [f"Global.output_dir={tmp_path}", "Global.verbose=0", *overrides])


def quiet(*a, **k):
    pass


def test_gmlp_digits_end_to_end(tmp_path):
    cfg = cfg_for(tmp_path, "configs/gmlp_digits.yml", "Global.epochs=8", "Global.run_name=r")
    m = train(cfg, print_fn=quiet)
    run = m["run_dir"]
    assert run == os.path.join(str(tmp_path), "gmlp_digits", "r")
    assert m["best"]["acc"] >= 0.90, m["best"]
    files = set(os.listdir(run))
    assert {"config.yml", "metrics.json", "best_model.pdparams", "latest.pdparams", "latest.pdopt",
            "latest.pdstates"} <= files
    assert any(f.startswith("vdlrecords.") for f in files)
    saved = json.load(open(os.path.join(run, "metrics.json")))
    assert saved["epochs_run"] == 8 and saved["best"]["acc"] == m["best"]["acc"]
    assert len(saved["history"]) == 8 and saved["history"][-1]["step"] == saved["global_step"]
    # the resolved config alone reproduces the run's settings (data stats written in)
    again = load_config(os.path.join(run, "config.yml"))
    assert again["Arch"] == cfg["Arch"] and again["Data"]["num_classes"] == 10
    assert len(again["Transforms"]["mean"]) == 1

    # VisualDL: train loss and lr every step, eval on the same step axis
    from visualdl import LogReader
    log = [f for f in files if f.startswith("vdlrecords.")][0]
    reader = LogReader(file_path=os.path.join(run, log))
    tags = set(reader.get_tags()["scalar"])
    assert {"train/loss", "train/lr", "eval/acc", "eval/loss"} <= tags
    steps = [r.id for r in reader.get_data("scalar", "train/loss")]
    assert steps == list(range(1, saved["global_step"] + 1))
    assert [r.id for r in reader.get_data("scalar", "eval/acc")][-1] == saved["global_step"]


class Interrupt(Exception):
    pass


def test_resume_matches_uninterrupted_run(tmp_path):
    extra = ["Global.epochs=4", "Arch.dropout=0.2", "LRScheduler.warmup_epochs=1", "EarlyStopping.patience=50"]
    full = train(cfg_for(tmp_path, "configs/mlp_digits.yml", "Global.run_name=full", *extra), print_fn=quiet)

    def interrupt_after_epoch_2(line):
        if "[Eval][Epoch 3/" in line and "eval_cost" in line:  # the result line of epoch 3's evaluation
            raise Interrupt(line)

    cfg = cfg_for(tmp_path, "configs/mlp_digits.yml", "Global.run_name=cut", "Global.verbose=1", *extra)
    with pytest.raises(Interrupt):
        train(cfg, print_fn=interrupt_after_epoch_2)
    run = os.path.join(str(tmp_path), "mlp_digits", "cut")
    state = json.load(open(os.path.join(run, "latest.pdstates")))
    assert state["progress"]["epochs_done"] == 2 and not state["finished"]

    cfg = load_config(os.path.join(run, "config.yml"), ["Global.verbose=0"])
    cfg["Global"]["checkpoints"] = run
    resumed = train(cfg, print_fn=quiet)
    # the saved config repeats the run, it does not point back at a checkpoint to resume
    assert load_config(os.path.join(run, "config.yml"))["Global"]["checkpoints"] is None
    assert resumed["global_step"] == full["global_step"]
    a = paddle.load(os.path.join(full["run_dir"], "latest.pdparams"))
    b = paddle.load(os.path.join(run, "latest.pdparams"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)
    # the history is the whole run's, evaluations before the interruption included
    assert [(h["step"], h["acc"], h["loss"]) for h in resumed["history"]] == \
        [(h["step"], h["acc"], h["loss"]) for h in full["history"]]
    assert resumed["best"]["acc"] == full["best"]["acc"]
    # one VisualDL file for the run; its step axis continues through the resume to the end
    from visualdl import LogReader
    logs = [f for f in os.listdir(run) if f.startswith("vdlrecords.")]
    assert len(logs) == 1
    steps = {r.id for r in LogReader(file_path=os.path.join(run, logs[0])).get_data("scalar", "train/loss")}
    assert steps == set(range(1, full["global_step"] + 1))


def test_early_stopping_stops_and_restores_best(tmp_path):
    # lr 0 never improves: stops after the first eval + patience, and the state says why
    m = train(cfg_for(tmp_path, "configs/mlp_digits.yml", "Global.epochs=20", "Optimizer.lr=0.0",
                      "LRScheduler.name=constant", "EarlyStopping.patience=2", "EarlyStopping.monitor=loss",
                      "EarlyStopping.mode=min"), print_fn=quiet)
    assert m["stopped_early"] and m["epochs_run"] == 3 and "did not improve" in m["stop_reason"]
    assert m["restored_best_weights"]


def run_tool(*args, cwd=ROOT):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_tool_errors_are_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("Global:\n  epochs: 3\n   seed: 1\n")
    assert_user_error(run_tool("tools/train.py", "-c", str(bad)), "bad.yml:3", "malformed YAML")
    assert_user_error(run_tool("tools/train.py", "-c", "configs/mlp_digits.yml", "-o", "Arch.name=gmlp_tiniest"),
                      "unknown model 'gmlp_tiniest'", "did you mean", "registered models")
    assert_user_error(run_tool("tools/train.py", "-c", "configs/mlp_digits.yml", "-o", "Optimizer.lrr=1"),
                      "Optimizer.lrr", "did you mean 'lr'")
    missing = tmp_path / "nope.tar.gz"
    assert_user_error(run_tool("tools/train.py", "-c", "configs/gmlp_cifar10.yml", "-o", f"Data.data_dir={missing}",
                               "-o", "Data.download=false"),  # never the network from a test
                      str(missing))
    assert_user_error(run_tool("tools/train.py", "-c", "configs/mlp_digits.yml", "-o", "Data.num_classes=7"),
                      "num_classes")
    assert_user_error(run_tool("tools/eval.py", str(tmp_path / "no_run")), "no_run")


def test_existing_run_dir_is_not_overwritten(tmp_path):
    run = tmp_path / "mlp_digits" / "r"
    run.mkdir(parents=True)
    (run / "best_model.pdparams").write_bytes(b"precious")
    proc = run_tool("tools/train.py", "-c", "configs/mlp_digits.yml", "-o", f"Global.output_dir={tmp_path}",
                    "-o", "Global.run_name=r")
    assert_user_error(proc, "already exists", "--resume")
    assert (run / "best_model.pdparams").read_bytes() == b"precious"


def test_eval_tool_reports_and_writes_json(tmp_path):
    m = train(cfg_for(tmp_path, "configs/mlp_digits.yml", "Global.epochs=2"), print_fn=quiet)
    proc = run_tool("tools/eval.py", m["run_dir"])
    assert proc.returncode == 0, proc.stderr
    assert "confusion matrix" in proc.stdout
    report = json.load(open(os.path.join(m["run_dir"], "eval_val.json")))
    assert report["acc"] == pytest.approx(m["best"]["acc"])
    assert np.array(report["confusion_matrix"]).sum() == report["samples"]
    assert len(report["per_class_accuracy"]) == 10


def test_data_errors_through_the_tool(tmp_path):
    from utils.data.synthetic import make_filelist
    root = tmp_path / "ds"
    paths = make_filelist(str(root), classes=3, n_train_per_class=4, n_val_per_class=2, size=16)
    lines = open(paths["train_list"]).read().splitlines()
    # a label beyond the 3 classes of labels.txt, on line 2
    lines[1] = lines[1].rsplit(" ", 1)[0] + " 7"
    open(paths["train_list"], "w").write("\n".join(lines) + "\n")
    common = ["tools/train.py", "-c", "configs/cnn_folder.yml", "-o", "Data.name=filelist",
              "-o", f"Data.data_dir={root}", "-o", f"Global.output_dir={tmp_path / 'out'}"]
    assert_user_error(run_tool(*common), "train_list.txt:2", "label 7")
    lines[1] = lines[1].rsplit(" ", 1)[0] + " 1"
    open(paths["train_list"], "w").write("\n".join(lines) + "\n")
    broken = root / lines[0].split()[0]
    broken.write_bytes(b"not a jpeg")
    assert_user_error(run_tool(*common), str(broken), "remove or replace")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.pdparams"))


def test_training_without_validation_set(tmp_path):
    lines = []
    m = train(cfg_for(tmp_path, "configs/mlp_digits.yml", "Global.epochs=2", "Data.val_split=0", "Global.verbose=1"),
              print_fn=lines.append)
    assert any("no validation set" in l for l in lines)
    assert m["best"] is None and m["history"] == [] and m["epochs_run"] == 2
    files = os.listdir(m["run_dir"])
    assert "latest.pdparams" in files and "best_model.pdparams" not in files
