"""Pre-flight checks (utils/checks/, tools/check.py): healthy configs pass, injected faults are
caught with the expected status and numbers."""
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from models import build_model, list_models
from utils import checks
from utils.build import build_network
from utils.checks import FAIL, PASS, SKIP, WARN, run_checks
from utils.config import load_config
from utils.data import ImageDataset, build_datasets
from utils.data.synthetic import make_class_folders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cfg_of(config="configs/mlp_digits.yml", *overrides):
    return load_config(os.path.join(ROOT, config), ["Global.verbose=0", *overrides])


def by_name(results):
    return {r.name: r for r in results}


@pytest.fixture(scope="module")
def mlp_cfg():
    return cfg_of()


@pytest.fixture(scope="module")
def digits(mlp_cfg):
    return build_datasets(mlp_cfg)


def with_labels(ds, labels):
    return ImageDataset(ds.store, ds.indices, labels, ds.transform, ds.class_names, ds.split)


# --------------------------------------------------------------------------- healthy

def test_healthy_mlp_digits_passes_every_check(mlp_cfg):
    res = by_name(run_checks(mlp_cfg))
    assert list(res) == list(checks.CHECKS)
    assert {n: r.status for n, r in res.items()} == {n: PASS for n in checks.CHECKS}, \
        "\n".join(checks.format_result(r) for r in res.values())
    v = {n: r.values for n, r in res.items()}
    assert v["data_finite"]["n"] == 1797                       # 1437 train + 360 val, every sample
    assert v["labels_in_range"]["n"] == 1797 and v["labels_in_range"]["num_classes"] == 10
    assert v["class_balance"]["counts"] == [142, 145, 142, 146, 145, 146, 145, 143, 139, 144]
    assert v["class_balance"]["ratio"] == pytest.approx(146 / 139)
    assert res["train_val_duplicates"].finding == "dups_ok"
    assert v["input_normalization"]["input_mean"][0] == pytest.approx(0.0, abs=0.01)
    assert v["input_normalization"]["input_std"][0] == pytest.approx(1.0, abs=0.01)
    assert v["input_normalization"]["raw_mean"] == "[0.31]" and v["input_normalization"]["raw_std"] == "[0.38]"
    assert v["loss_at_init"]["lnc"] == pytest.approx(math.log(10))
    assert 0.9 < v["loss_at_init"]["ratio"] < 1.15
    assert v["gradient_flow"]["n"] == 6
    assert v["gradient_flow"]["n_values"] == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert v["batch_independence"]["cross"] == 0.0 and v["batch_independence"]["self_grad"] > 0
    o = v["overfit_tiny"]
    assert o["n"] == 32 and o["acc"] == 1.0 and o["loss"] < 0.1 < 2.0 < o["loss0"] and o["steps"] <= 300
    assert "dropout as configured (max p 0.1)" in res["overfit_tiny"].evidence
    b = v["input_baseline"]
    assert b["steps"] == o["steps"] and b["real"] == o["loss"] and b["zero"] >= b["entropy"] - 1e-3
    assert b["ratio"] < 0.1
    h = v["heldout_signal"]
    assert h["n_val"] == 360 and h["acc"] > 0.8 and h["need"] < 0.2 and h["loss"] < h["loss_need"] < math.log(10)
    # the one-line format: status, name, evidence with numbers
    line = checks.format_result(res["loss_at_init"])
    assert re.match(r"PASS  loss_at_init +loss \d\.\d{3} vs ln\(10\)=2\.303 \(ratio 1\.\d\d\)", line), line


def test_registered_models_are_batch_independent(mlp_cfg, digits):
    from utils.errors import ConfigError

    big = None  # digits resized to 16x16, for the models that need more than 8x8 pixels (fastnet: >= 9)
    for name in list_models():
        kw = {"patch_size": 2} if name.startswith("gmlp") else {}
        cfg, bundle, size = mlp_cfg, digits, 8
        try:
            build_model(name, num_classes=10, in_channels=1, image_size=8, **kw)
        except ConfigError as e:
            assert "image_size" in str(e), (name, e)
            if big is None:
                cfg16 = cfg_of("configs/mlp_digits.yml", "Data.image_size=16")
                big = (cfg16, build_datasets(cfg16))
            (cfg, bundle), size = big, 16
        res = run_checks(cfg, ["batch_independence"], bundle=bundle,
                         model_fn=lambda: build_model(name, num_classes=10, in_channels=1, image_size=size, **kw))[0]
        assert res.status == PASS and res.values["cross"] == 0.0 and res.values["self_grad"] > 0, (name, res.evidence)


# --------------------------------------------------------------------------- data faults

class NaNInputs(paddle.io.Dataset):
    """The wrapped dataset with NaN written into the first pixel of some samples."""

    def __init__(self, ds, bad):
        super().__init__()
        self.ds, self.bad = ds, set(bad)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        if i in self.bad:
            x = x.copy()
            x[0, 0, 0] = np.nan
        return x, y

    def __getattr__(self, name):  # labels, raw, ...
        return getattr(self.__dict__["ds"], name)


def test_nan_inputs_fail_and_model_checks_are_skipped(mlp_cfg, digits):
    bundle = dataclasses.replace(digits, train=NaNInputs(digits.train, [3, 17, 1000]))
    res = by_name(run_checks(mlp_cfg, ["data_finite", "input_normalization", "loss_at_init"], bundle=bundle))
    r = res["data_finite"]
    assert r.status == FAIL and r.values["n_bad"] == 3 and r.values["n_nan"] == 3 and r.values["n_inf"] == 0
    assert r.values["bad_samples"] == [["train", 3], ["train", 17], ["train", 1000]]
    assert "train 3, train 17, train 1000" in r.evidence and "Normalize std of 0" in r.remedy
    assert res["input_normalization"].status == SKIP and res["loss_at_init"].status == SKIP
    assert "data_finite failed" in res["loss_at_init"].evidence


def test_labels_out_of_range_fail(mlp_cfg, digits):
    labels = digits.train.labels.copy()
    labels[5], labels[9], labels[12] = 10, -1, 10
    bundle = dataclasses.replace(digits, train=with_labels(digits.train, labels))
    res = by_name(run_checks(mlp_cfg, ["labels_in_range", "class_balance", "overfit_tiny"], bundle=bundle))
    r = res["labels_in_range"]
    assert r.status == FAIL and r.values["n_bad"] == 3 and r.values["bad_values"] == "-1, 10"
    assert "train 5, train 9, train 12" in r.evidence
    assert res["class_balance"].status == SKIP and res["overfit_tiny"].status == SKIP


def test_class_imbalance_warns(tmp_path):
    make_class_folders(str(tmp_path), ["big", "small"], [40, 8], size=8, fmt="png")
    cfg = cfg_of("configs/cnn_folder.yml", f"Data.data_dir={tmp_path}", "Data.image_size=8", "Data.val_split=0.2",
                 "Transforms.train=[Normalize]")
    r = run_checks(cfg, ["class_balance"])[0]
    # 48 images, 10 carved out stratified (8 + 2): 32 big / 6 small in train
    assert r.status == WARN and r.values["counts"] == [32, 6]
    assert r.values["ratio"] == pytest.approx(32 / 6) and r.values["limit"] == 3.0
    assert "ratio 5.33:1, above 3:1" in r.evidence and "per-class accuracy" in r.remedy


def test_duplicates_between_train_and_val(tmp_path):
    make_class_folders(str(tmp_path / "train"), 3, 10, size=8, fmt="png", seed=0)
    make_class_folders(str(tmp_path / "val"), 3, 4, size=8, fmt="png", seed=1)
    shutil.copy(tmp_path / "train/class0/0000.png", tmp_path / "val/class0/dup_a.png")
    shutil.copy(tmp_path / "train/class1/0003.png", tmp_path / "val/class1/dup_b.png")
    shutil.copy(tmp_path / "train/class2/0005.png", tmp_path / "val/class0/dup_c.png")   # copied with another label
    cfg = cfg_of("configs/cnn_folder.yml", f"Data.data_dir={tmp_path}", "Data.image_size=8",
                 "Transforms.train=[Normalize]")
    r = run_checks(cfg, ["train_val_duplicates"])[0]
    assert r.status == FAIL                        # 3 of 15 val images = 20% > 1%
    d = r.values["duplicates"]["val"]
    assert d["count"] == 3 and d["of"] == 15 and r.values["fraction"] == pytest.approx(0.2)
    assert r.values["n_conflict"] == 1 and r.values["n_train"] == 30
    bundle = build_datasets(cfg)
    for vi, ti in d["pairs"]:   # the reported indices really are copies
        assert np.array_equal(bundle.val.raw(vi)[0], bundle.train.raw(ti)[0])
    assert "3 of 15 val images (20.0%" in r.evidence


def test_unnormalized_inputs_warn():
    cfg = cfg_of("configs/mlp_digits.yml", "Transforms.train=[]", "Transforms.eval=[]")
    r = run_checks(cfg, ["input_normalization"])[0]
    assert r.status == WARN and r.finding == "norm_warn"
    # [0,1] pixels reach the network: the input stats are the raw ones
    assert r.values["input_mean"][0] == pytest.approx(0.3059, abs=0.005)
    assert r.values["input_std"][0] == pytest.approx(0.3764, abs=0.005)
    assert "Normalize" in r.remedy and "mean [0.31] std [0.38]" in r.remedy
    # a Normalize with the wrong statistics (mean 0, std 1 in [0,1] units) is named as such
    cfg = cfg_of("configs/mlp_digits.yml", "Transforms.mean=[0.0]", "Transforms.std=[1.0]")
    r = run_checks(cfg, ["input_normalization"])[0]
    assert r.status == WARN and r.finding == "norm_stats"
    assert r.values["input_std"][0] == pytest.approx(0.3764, abs=0.005) and r.values["used_std"] == "[1.00]"
    assert "Transforms.mean: auto" in r.remedy


# --------------------------------------------------------------------------- model faults

class Wrapped(nn.Layer):
    def __init__(self, net, kind):
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x):
        out = self.net(x)
        return nn.functional.softmax(out, axis=-1) if self.kind == "softmax" else out * 100.0


def test_doubled_softmax_and_scaled_logits_fail_loss_at_init(mlp_cfg, digits):
    res = by_name(run_checks(mlp_cfg, ["loss_at_init", "overfit_tiny"], bundle=digits,
                             model_fn=lambda: Wrapped(build_network(mlp_cfg, digits), "softmax")))
    r = res["loss_at_init"]
    assert r.status == FAIL and r.finding == "init_probs"
    assert r.values["ratio"] == pytest.approx(1.0, abs=0.02)       # looks fine by the ratio alone
    assert r.values["floor"] == pytest.approx(math.log(math.e + 9) - 1)
    assert "Softmax is applied twice" in r.remedy
    o = res["overfit_tiny"]                                       # and it cannot be trained
    assert o.status == FAIL and o.values["loss"] > r.values["floor"] - 1e-3 and "broken" in o.evidence

    r = run_checks(mlp_cfg, ["loss_at_init"], bundle=digits,
                   model_fn=lambda: Wrapped(build_network(mlp_cfg, digits), "x100"))[0]
    assert r.status == FAIL and r.finding == "init_high" and r.values["ratio"] > 5
    assert r.values["logit_std"] > 20 and "bad init" in r.remedy


class FrozenDead(nn.Layer):
    def __init__(self, net, dead=True):
        super().__init__()
        self.net = net
        net.body[0].weight.stop_gradient = True       # frozen
        if dead:
            self.unused = nn.Linear(4, 4)               # never called: no gradient
            self.scale = self.create_parameter([1], default_initializer=nn.initializer.Constant(1.0))

    def forward(self, x):
        out = self.net(x)
        return out + 0.0 * self.scale if hasattr(self, "scale") else out   # zero gradient


def test_gradient_flow_lists_frozen_and_dead(mlp_cfg, digits):
    r = run_checks(mlp_cfg, ["gradient_flow"], bundle=digits,
                   model_fn=lambda: FrozenDead(build_network(mlp_cfg, digits)))[0]
    assert r.status == FAIL and r.finding == "grads_bad"
    assert sorted(r.values["dead_names"]) == ["scale", "unused.bias", "unused.weight"]
    assert r.values["frozen_names"] == ["net.body.0.weight"] and r.values["nonfinite_names"] == []
    assert r.values["n_bad"] == 3 and r.values["n"] == 5 + 3
    r = run_checks(mlp_cfg, ["gradient_flow"], bundle=digits,
                   model_fn=lambda: FrozenDead(build_network(mlp_cfg, digits), dead=False))[0]
    assert r.status == WARN and r.values["frozen_names"] == ["net.body.0.weight"] and r.values["n"] == 5


class BatchMixing(nn.Layer):
    """A flatten with the height and batch axes swapped: each row takes pixels of every sample."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        n = x.shape[0]
        return self.fc(x.transpose([2, 0, 1, 3]).reshape([n, -1]))


def test_batch_mixing_model_fails(mlp_cfg, digits):
    r = run_checks(mlp_cfg, ["batch_independence"], bundle=digits, model_fn=BatchMixing)[0]
    assert r.status == FAIL and r.finding == "indep_mixed"
    assert r.values["cross"] > 1e-3 * r.values["self_grad"] and r.values["n_pairs"] == 6 * 5
    assert "reshape or transpose" in r.remedy


# --------------------------------------------------------------------------- training faults

class ConstantOutput(nn.Layer):
    def __init__(self):
        super().__init__()
        self.bias = self.create_parameter([10], default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x):
        return paddle.zeros([x.shape[0], 10]) + self.bias


def test_model_that_ignores_its_input_fails(mlp_cfg, digits):
    res = by_name(run_checks(mlp_cfg, ["batch_independence", "overfit_tiny", "input_baseline"], bundle=digits,
                             model_fn=ConstantOutput, settings={"overfit_steps": 100}))
    assert res["batch_independence"].finding == "indep_no_input" and res["batch_independence"].status == FAIL
    o = res["overfit_tiny"]
    assert o.status == FAIL and o.values["steps"] == 100 and o.values["acc"] <= 4 / 32   # best constant guess
    assert "the training pipeline is broken" in o.evidence and "labels aligned" in o.remedy
    b = res["input_baseline"]
    assert b.status == FAIL and b.values["ratio"] == pytest.approx(1.0, abs=1e-4)


def test_learning_rate_zero_cannot_overfit(mlp_cfg, digits):
    r = run_checks(mlp_cfg, ["overfit_tiny"], bundle=digits, settings={"overfit_lr": 0.0, "overfit_steps": 50})[0]
    assert r.status == FAIL and r.values["steps"] == 50 and r.values["loss"] == pytest.approx(r.values["loss0"])


def test_permuted_labels_memorized_but_do_not_generalize(mlp_cfg, digits):
    # A few dozen samples can be memorized whatever their labels (Zhang et al. 2017), so the
    # tiny-subset checks PASS; only the held-out comparison sees that the labels are noise.
    labels = np.random.RandomState(0).permutation(digits.train.labels)
    bundle = dataclasses.replace(digits, train=with_labels(digits.train, labels))
    res = by_name(run_checks(mlp_cfg, ["overfit_tiny", "input_baseline", "heldout_signal"], bundle=bundle))
    assert res["overfit_tiny"].status in (PASS, WARN) and res["overfit_tiny"].values["acc"] == 1.0
    assert res["input_baseline"].status == PASS
    h = res["heldout_signal"]
    assert h.status == FAIL and h.values["acc"] < h.values["need"] and h.values["acc"] < 0.2
    assert h.values["loss"] > h.values["loss_need"] and h.values["base_loss"] == pytest.approx(math.log(10), abs=0.01)
    assert "labels that do not match their images" in h.remedy


# --------------------------------------------------------------------------- API and messages

def test_only_accepts_groups_and_rejects_unknown_names():
    assert checks.select_checks(["model"]) == ["loss_at_init", "gradient_flow", "batch_independence"]
    assert checks.select_checks(["overfit_tiny,data_finite"]) == ["data_finite", "overfit_tiny"]
    with pytest.raises(checks.UserError, match="did you mean 'overfit_tiny'"):
        checks.select_checks(["overfit_tiy"])


def test_every_finding_has_an_english_message_and_a_language_can_be_added(monkeypatch):
    package = os.path.join(ROOT, "utils", "checks")
    src = "".join(open(os.path.join(package, f), encoding="utf-8").read() for f in sorted(os.listdir(package))
                  if f.endswith(".py"))
    used = set(re.findall(r'\bmake_result\([^,]+, [^,]+, "(\w+)"', src))
    assert len(used) > 30 and used <= set(checks.MESSAGES["en"]), used - set(checks.MESSAGES["en"])
    monkeypatch.setitem(checks.MESSAGES, "zh", {"init_ok": ("初始损失 {loss:.2f}", None)})
    r = checks.CheckResult("loss_at_init", PASS, "init_ok", {"loss": 2.3})
    assert r.render("zh").evidence == "初始损失 2.30"
    r = checks.CheckResult("loss_at_init", FAIL, "init_low", dict(loss=1.0, num_classes=10, lnc=2.3, n=8, ratio=0.43,
                                                                     lo=0.8, logit_std=1.0))
    assert r.render("zh").remedy.startswith("An untrained model")     # falls back to English


def test_a_crashing_check_is_a_fail_naming_the_exception(mlp_cfg, digits):
    def broken():
        raise RuntimeError("shapes [4, 64] and [32, 10] do not match")

    res = run_checks(mlp_cfg, ["loss_at_init", "class_balance"], bundle=digits, model_fn=broken)
    assert [(r.name, r.status) for r in res] == [("class_balance", PASS), ("loss_at_init", FAIL)]
    r = res[1]
    assert r.finding == "check_error"
    assert "RuntimeError: shapes [4, 64] and [32, 10] do not match at test_checks.py:" in r.evidence
    assert "--only loss_at_init" in r.remedy and "Traceback" in r.values["traceback"]


# --------------------------------------------------------------------------- the tool

def run_tool(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "check.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_tool_cnn_digits_passes_exit_0():
    p = run_tool("-c", "configs/cnn_digits.yml", "-o", "Global.verbose=0")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    for name in checks.CHECKS:
        assert any(re.match(rf"PASS  {name} +\S", ln) for ln in lines), (name, p.stdout)
    assert "12 passed, 0 warning(s), 0 failed, 0 skipped" in p.stdout


def test_tool_fail_exit_1_with_json(tmp_path):
    out = tmp_path / "r.json"
    p = run_tool("-c", "configs/mlp_digits.yml", "-o", "Arch.init=normal", "-o", "Arch.init_std=5",
                 "--only", "loss_at_init", "--json", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    assert re.search(r"^FAIL  loss_at_init +loss \d+\.\d+ vs ln\(10\)=2\.303 \(ratio \d+\.\d+, above 2\)",
                     p.stdout, re.M)
    assert re.search(r"^      remedy: The untrained model is confidently wrong", p.stdout, re.M)
    report = json.loads(out.read_text())
    assert report["exit_status"] == 1 and [r["name"] for r in report["results"]] == ["loss_at_init"]
    assert report["results"][0]["status"] == FAIL and report["results"][0]["values"]["ratio"] > 2


def test_tool_user_error_exit_2():
    p = run_tool("-c", "configs/mlp_digits.yml", "--only", "overfit_tiy")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("error: unknown check 'overfit_tiy' (did you mean 'overfit_tiny'?)")
    assert len(p.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- FineTune, as training applies it

def test_checks_see_the_finetune_freeze_and_lr_mult(mlp_cfg, digits):
    """tools/check.py builds the model as training does: FineTune.freeze / lr_mult applied."""
    from utils.checks.context import CheckContext

    cfg = cfg_of("configs/mlp_digits.yml", "FineTune.freeze=[body.0.*]", "FineTune.lr_mult={head: 0.5}")
    net = CheckContext(cfg, bundle=digits).new_model()
    frozen = sorted(n for n, p in net.named_parameters() if p.stop_gradient)
    assert frozen == ["body.0.bias", "body.0.weight"]
    assert {n: p.optimize_attr["learning_rate"] for n, p in net.named_parameters() if n.startswith("head")} == \
        {"head.bias": 0.5, "head.weight": 0.5}
    r = run_checks(cfg, ["gradient_flow"], bundle=digits)[0]
    assert r.status == WARN and sorted(r.values["frozen_names"]) == frozen  # not counted as trainable


@pytest.mark.parametrize("override", ["FineTune.freeze=['*']", "FineTune.lr_mult={'*': 0}"])
def test_zero_trainable_parameters_is_one_line_error_before_training(tmp_path, digits, override):
    from utils.errors import ConfigError
    from utils.trainer import train

    cfg = cfg_of("configs/mlp_digits.yml", override, f"Global.output_dir={tmp_path}")
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}=.* froze all \d+ trainable tensors.*zero trainable") as e:
        train(cfg, print_fn=lambda *a, **k: None)
    assert "\n" not in str(e.value)
    assert not any(f == "metrics.json" for _, _, fs in os.walk(tmp_path) for f in fs)  # no epoch ran
    with pytest.raises(ConfigError, match=key):
        run_checks(cfg, ["gradient_flow"], bundle=digits)


# --------------------------------------------------------------------------- start-up schedule warnings

@pytest.mark.parametrize("overrides,keys", [
    (["LRScheduler.name=exponential", "LRScheduler.gamma=0.5"], ["LRScheduler.gamma=0.5"]),
    (["LRScheduler.name=multistep", "LRScheduler.milestones=[1,2]", "LRScheduler.gamma=0.01"],
     ["LRScheduler.milestones=[1, 2]", "LRScheduler.gamma=0.01"]),
])
def test_schedule_that_collapses_early_is_a_startup_warning(overrides, keys):
    from utils.training.optim import build_lr_scheduler, schedule_warnings

    cfg = cfg_of("configs/mlp_digits.yml", "Global.epochs=100", "LRScheduler.warmup_epochs=0", *overrides)
    warned = [w for w in schedule_warnings(cfg, 100) if "under 1% of its peak" in w]
    assert len(warned) == 1 and all(k in warned[0] for k in keys) and "fix: -o LRScheduler." in warned[0], warned
    fix = warned[0].split("fix: ", 1)[1].split(" (")[0].replace("-o ", "").split()
    fixed = cfg_of("configs/mlp_digits.yml", "Global.epochs=100", "LRScheduler.warmup_epochs=0", *overrides, *fix)
    assert [w for w in schedule_warnings(fixed, 100) if "under 1%" in w] == []  # the printed fix works
    sch = build_lr_scheduler(fixed, 10, 100)
    assert sch.lr_at(99) >= 0.01 * sch.lr_at(0)


@pytest.mark.parametrize("config", sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".yml")))
def test_shipped_schedules_do_not_collapse_early(config):
    cfg = cfg_of(os.path.join("configs", config))
    from utils.training.optim import schedule_warnings

    assert [w for w in schedule_warnings(cfg, cfg["Global"]["epochs"]) if "under 1%" in w] == []
