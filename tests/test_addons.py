"""The add-on hook shape: when the spine asks each hook, what the run holds then, where each slot's
callbacks run, and that an add-on comes out of the spine with its registry line alone."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from paddle.callbacks import Callback

import utils.trainer as trainer
from tests.layering import ROOT
from utils.config import load_config
from utils.training import callbacks as cb
from utils.training.addon import SLOTS, AddOn


def cfg_for(tmp_path, *overrides):
    return load_config(os.path.join(ROOT, "configs", "cnn_digits.yml"),
                       [f"Global.output_dir={tmp_path}", "Global.epochs=2", "Data.fraction=0.3", "Doctor.enable=false",
                        "VisualDL.enable=false", *overrides])


class Marker(Callback):
    def __init__(self, slot, seen):
        super().__init__()
        self.slot, self.seen = slot, seen

    def on_train_batch_end(self, step, logs=None):
        self.seen.append(self.slot)

    def on_eval_end(self, logs=None):
        self.seen.append(f"{self.slot}:eval")


class Recorder(AddOn):
    """Records each hook with what the run holds at that moment, and puts a marker in every slot."""

    calls = []
    seen = []

    def setup(self, run):
        self.calls.append(("setup", run.network is not None, run.optimizer is None, run.run_dir is None))

    def prepare(self, run):
        self.calls.append(("prepare", run.optimizer is not None, os.path.isdir(run.run_dir), run.model is None))
        return {}

    def callbacks(self, run):
        self.calls.append(("callbacks", run.checkpointer is not None, callable(run.eval_fn), run.model is not None))
        self.markers = {slot: Marker(slot, self.seen) for slot in SLOTS}
        return {slot: [m] for slot, m in self.markers.items()}

    def stop_reason(self):
        return None

    def finish(self, run, metrics):
        with open(os.path.join(run.run_dir, "metrics.json"), encoding="utf-8") as f:
            on_disk = json.load(f)["status"]
        self.calls.append(("finish", metrics["epochs_run"], metrics["status"], on_disk))
        metrics["recorder"] = "was here"


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    Recorder.calls, Recorder.seen = [], []
    monkeypatch.setattr(trainer, "ADDONS", trainer.ADDONS + (Recorder,))
    fit_lists = []
    real_fit = trainer.fit
    monkeypatch.setattr(trainer, "fit", lambda run, model, callbacks: fit_lists.append(list(callbacks))
                        or real_fit(run, model, callbacks))
    metrics = trainer.train(cfg_for(tmp_path), print_fn=lambda *a: None)
    return metrics, fit_lists[0]


def test_hooks_are_asked_in_order_with_the_run_built_so_far(recorded):
    metrics, _ = recorded
    assert Recorder.calls == [
        ("setup", True, True, True),         # network built; no optimizer, no run directory yet
        ("prepare", True, True, True),       # optimizer and run directory exist; paddle.Model not yet
        ("callbacks", True, True, True),     # checkpointer and evaluation exist
        ("finish", 2, "finished", "running"),  # after fit; the final metrics.json is written after the hook
    ]
    with open(os.path.join(metrics["run_dir"], "metrics.json"), encoding="utf-8") as f:
        on_disk = json.load(f)
    assert on_disk["recorder"] == "was here" and on_disk["status"] == "finished"


def test_slots_place_callbacks_where_they_say(recorded):
    _, callbacks = recorded
    kinds = [type(c).__name__ if not isinstance(c, Marker) else f"<{c.slot}>" for c in callbacks]
    assert kinds[0] == "Progress" and kinds[1] == "<first>"
    assert kinds.index("<first>") < kinds.index("StopOnNaN") < kinds.index("<step>") < kinds.index("PeriodicEval")
    assert kinds[-1] == "<last>"
    # 'listen' callbacks get every hapi hook after the evaluation, and the evaluation hands them its metrics
    assert kinds.index("PeriodicEval") < kinds.index("Checkpointer") < kinds.index("<listen>") < kinds.index("LRScheduler")
    evaluator = next(c for c in callbacks if isinstance(c, cb.PeriodicEval))
    assert any(isinstance(c, Marker) and c.slot == "listen" for c in evaluator.listeners)
    assert Recorder.seen.count("listen:eval") == 2  # one per evaluation (2 epochs)


def test_the_spine_names_no_addon_outside_its_registry():
    """Its code (docstrings and comments aside) names an add-on, its module or its config section
    only in the registry: the add-ons' import lines and the ADDONS tuple."""
    path = os.path.join(ROOT, "utils", "trainer.py")
    tree = ast.parse(open(path, encoding="utf-8").read())
    registry = [n for n in tree.body if (isinstance(n, ast.ImportFrom) and n.module.startswith(("utils.addons", "utils.doctor")))
                or (isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "ADDONS")]
    assert len(registry) == len(trainer.ADDONS) + 1
    skip = {id(x) for n in registry for x in ast.walk(n)}
    docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    words = set()
    for n in ast.walk(tree):
        if id(n) in skip or id(n) in docstrings:
            continue
        if isinstance(n, ast.Name):
            words.add(n.id)
        elif isinstance(n, ast.Attribute):
            words.add(n.attr)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            words.update(re.findall(r"\w+", n.value))
    addon_words = {cls.__name__ for cls in trainer.ADDONS} | {cls.__module__.split(".")[-1] for cls in trainer.ADDONS}
    addon_words |= {"EMA", "AMP", "Doctor", "FineTune", "ema", "amp", "doctor", "finetune", "distributed", "dp"}
    assert words & addon_words == set()
    assert {"setup", "prepare", "callbacks", "finish", "stop_reason"} <= words  # it asks them through the hooks


def test_an_addon_comes_out_with_its_registry_line(tmp_path):
    """Delete the doctor's package and the EMA module, and their lines in the spine: a run still trains."""
    dst = tmp_path / "project"
    for d in ("models", "utils", "tools", "configs"):
        shutil.copytree(os.path.join(ROOT, d), dst / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(dst / "utils" / "doctor")
    os.remove(dst / "utils" / "addons" / "ema.py")
    spine = dst / "utils" / "trainer.py"
    src = spine.read_text(encoding="utf-8")
    src = src.replace("from utils.doctor.addon import DoctorAddOn\n", "").replace("from utils.addons.ema import WeightAverage\n", "")
    src = src.replace("WeightAverage, ", "").replace("DoctorAddOn, ", "")
    ast.parse(src)
    spine.write_text(src, encoding="utf-8")
    r = subprocess.run([sys.executable, "tools/train.py", "-c", "configs/cnn_digits.yml", "-o", "Global.epochs=1",
                        "-o", "Data.fraction=0.3", "-o", f"Global.output_dir={tmp_path / 'out'}"],
                       cwd=dst, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (run_dir,) = (tmp_path / "out" / "cnn_digits").iterdir()
    with open(run_dir / "metrics.json", encoding="utf-8") as f:
        assert json.load(f)["epochs_run"] == 1
    assert not (run_dir / "diagnosis.json").exists()  # the doctor is gone, and nothing else broke
