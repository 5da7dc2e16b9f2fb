"""The first command a user runs: CIFAR downloaded when missing (or one error naming both ways on),
a smoke-test schedule warning that names its fix, and ``Data.val_fraction`` for quick runs.

No test touches the network: Paddle's download (or the HTTP stream under it) is replaced.
"""
import dataclasses
import hashlib
import os
import subprocess
import sys

import numpy as np
import paddle.dataset.common as common
import pytest
import yaml
from tool_asserts import assert_user_error

from utils.config import load_config, validate
from utils.data import build_datasets
from utils.data.sources import cifar
from utils.data.synthetic import make_cifar_tarball, make_class_folders
from utils.errors import ConfigError, DataError
from utils.trainer import train
from utils.training.optim import schedule_warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER_ROUTE = "-o Data.name=folder -o Data.data_dir=DIR"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A synthetic CIFAR-10 archive: 2,000 train (200 val carved, 20 per class), 100 test."""
    return make_cifar_tarball(str(tmp_path_factory.mktemp("src") / "c10.tar.gz"), n_train=2000, n_test=100)


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """Paddle's dataset cache moved into tmp_path (the real one is never written)."""
    home = tmp_path / "paddle_cache"
    monkeypatch.setattr(common, "DATA_HOME", str(home))
    return home / "cifar" / "cifar-10-python.tar.gz"


def md5_of(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def fake_paddle_download(archive, calls):
    """Paddle's download as it behaves online: the file lands in its cache, the cached path is returned."""
    def download(url, module, md5):
        calls.append((url, module, md5))
        dest = os.path.join(common.DATA_HOME, module, url.split("/")[-1])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(archive, "rb") as src, open(dest, "wb") as out:
            out.write(src.read())
        return dest
    return download


def offline(url, module, md5):
    # what Paddle 3.3.1 raises here, without network, after its 3 attempts (about 2 s)
    raise RuntimeError(f"Cannot download {url} within retry limit 3")


class FakeStream:
    """httpx.stream serving ``payload``: Paddle's real download loop (progress bar, md5, retries) runs on it."""

    def __init__(self, payload, served):
        self.payload, self.served = payload, served
        self.headers = {"content-length": str(len(payload))}

    def __call__(self, method, url, **kw):
        self.served.append(url)
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def iter_bytes(self, chunk_size):
        for i in range(0, len(self.payload), chunk_size):
            yield self.payload[i:i + chunk_size]


# --------------------------------------------------------------------------- download

def test_cifar_configs_download_by_default_with_paddles_checksums():
    from paddle.vision.datasets import cifar as pv

    for config in ("gmlp_cifar10", "gmlp_cifar100", "cnn_cifar10", "resnet20_cifar10"):
        assert load_config(os.path.join(ROOT, "configs", f"{config}.yml"))["Data"]["download"] is True, config
    assert validate({})["Data"]["download"] is False  # a bare config never reaches the network
    assert (cifar.CIFAR["cifar10"].url, cifar.CIFAR["cifar10"].md5) == (pv.CIFAR10_URL, pv.CIFAR10_MD5)
    assert (cifar.CIFAR["cifar100"].url, cifar.CIFAR["cifar100"].md5) == (pv.CIFAR100_URL, pv.CIFAR100_MD5)


def test_download_writes_the_archive_and_trains(monkeypatch, tmp_path, archive, cache, capsys):
    calls = []
    monkeypatch.setattr(common, "download", fake_paddle_download(archive, calls))
    target = tmp_path / "data" / "cifar-10-python.tar.gz"
    cfg = load_config(os.path.join(ROOT, "configs/gmlp_cifar10.yml"), [
        f"Data.data_dir={target}", "Global.epochs=1", f"Global.output_dir={tmp_path / 'out'}",
        "Global.run_name=r", "Global.verbose=0", "Global.print_flops=false", "DataLoader.num_workers=0",
        "Data.fraction=0.1", "Data.val_fraction=0.25", "VisualDL.enable=false", "Doctor.enable=false"])
    printed = []
    m = train(cfg, print_fn=lambda *a, **k: printed.append(" ".join(map(str, a))))
    assert calls == [(cifar.CIFAR["cifar10"].url, "cifar", cifar.CIFAR["cifar10"].md5)]
    assert target.is_file() and md5_of(target) == md5_of(archive)
    assert not os.path.exists(f"{target}.part")
    assert "downloading https://dataset.bj.bcebos.com/cifar/cifar-10-python.tar.gz" in capsys.readouterr().err
    assert m["epochs_run"] == 1 and 0 <= m["best"]["acc"] <= 1
    run = m["run_dir"]
    saved = yaml.safe_load(open(os.path.join(run, "config.yml")))
    assert saved["Data"]["val_fraction"] == 0.25 and saved["Data"]["fraction"] == 0.1
    # the 1-epoch smoke test with the recipe's 2 warmup epochs: the warning names the override and a value
    warn = [w for w in printed if "warmup_epochs=2 >= Global.epochs=1" in w]
    assert len(warn) == 1 and "-o LRScheduler.warmup_epochs=0.1" in warn[0], printed
    # a second build finds the file: no second download
    build_datasets(cfg)
    assert len(calls) == 1


def test_checksum_mismatch_is_one_clear_error(monkeypatch, tmp_path, archive, cache):
    # Paddle's own download loop on a stream serving the synthetic archive: its md5 is not CIFAR-10's
    served = []
    monkeypatch.setattr(common.httpx, "stream", FakeStream(open(archive, "rb").read(), served))
    target = tmp_path / "c10.tar.gz"
    with pytest.raises(DataError) as e:
        build_datasets(validate({"Data": {"name": "cifar10", "data_dir": str(target), "download": True}}))
    msg = str(e.value)
    assert len(served) == 3  # Paddle retried 3 times before giving up
    assert f"md5 {md5_of(archive)}, expected {cifar.CIFAR['cifar10'].md5}" in msg and "\n" not in msg
    assert "run again" in msg and cifar.CIFAR["cifar10"].official_url in msg and str(target) in msg
    assert not cache.exists() and not target.exists()  # the bad file removed, nothing written at the target


def test_download_through_paddles_loop_checks_md5_and_shows_progress(monkeypatch, tmp_path, archive, cache, capsys):
    served = []
    monkeypatch.setattr(common.httpx, "stream", FakeStream(open(archive, "rb").read(), served))
    spec = dataclasses.replace(cifar.CIFAR["cifar10"], md5=md5_of(archive))  # the synthetic file is "official"
    monkeypatch.setitem(cifar.CIFAR, "cifar10", spec)
    target = tmp_path / "sub" / "c10.tar.gz"
    b = build_datasets(validate({"Data": {"name": "cifar10", "data_dir": str(target), "download": True}}))
    assert len(served) == 1 and (len(b.train), len(b.val)) == (1800, 200)
    assert md5_of(cache) == md5_of(target) == spec.md5
    assert "item" in capsys.readouterr().out  # Paddle's progress bar ("item 1/N ...")


def test_offline_error_names_both_routes(monkeypatch, tmp_path, cache):
    monkeypatch.setattr(common, "download", offline)
    target = tmp_path / "data" / "cifar-10-python.tar.gz"
    cfg = load_config(os.path.join(ROOT, "configs/gmlp_cifar10.yml"), [f"Data.data_dir={target}"])
    with pytest.raises(DataError) as e:
        build_datasets(cfg)
    msg = str(e.value)
    assert msg.startswith(f"CIFAR-10 archive not found: {target}, and downloading") and "\n" not in msg
    assert "within retry limit 3" in msg  # the reason
    assert f"download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz to {target}" in msg
    assert FOLDER_ROUTE in msg and not target.exists()


def test_unwritable_target_is_one_error_and_the_cache_keeps_the_download(monkeypatch, tmp_path, archive, cache):
    monkeypatch.setattr(common, "download", fake_paddle_download(archive, []))
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "c10.tar.gz"  # its parent is a file: cannot be created
    with pytest.raises(DataError) as e:
        build_datasets(validate({"Data": {"name": "cifar10", "data_dir": str(target), "download": True}}))
    assert str(e.value).startswith(f"cannot write the downloaded archive to {target}") and str(cache) in str(e.value)
    assert md5_of(cache) == md5_of(archive)  # -o Data.data_dir=null reads it from there


def test_download_false_never_calls_the_network(monkeypatch, tmp_path):
    def forbidden(*a):
        raise AssertionError("download called with Data.download: false")

    monkeypatch.setattr(common, "download", forbidden)
    target = tmp_path / "c100.tar.gz"
    cfg = load_config(os.path.join(ROOT, "configs/gmlp_cifar100.yml"),
                      [f"Data.data_dir={target}", "Data.download=false"])
    with pytest.raises(DataError) as e:
        build_datasets(cfg)
    msg = str(e.value)
    assert msg.startswith(f"CIFAR-100 archive not found: {target} (Data.download is false)")
    assert "cifar-100-python.tar.gz" in msg and "-o Data.download=true" in msg and FOLDER_ROUTE in msg


def test_train_tool_without_download_is_one_line_naming_both_routes(tmp_path):
    missing = tmp_path / "nope.tar.gz"
    proc = subprocess.run([sys.executable, "tools/train.py", "-c", "configs/gmlp_cifar10.yml",
                           "-o", f"Data.data_dir={missing}", "-o", "Data.download=false",
                           "-o", f"Global.output_dir={tmp_path / 'out'}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert_user_error(proc, str(missing), "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                      FOLDER_ROUTE, "-o Data.download=true")


# --------------------------------------------------------------------------- val_fraction

def test_val_fraction_is_stratified_and_leaves_train_alone(tmp_path, archive):
    base = {"name": "cifar10", "data_dir": archive}
    full = build_datasets(validate({"Data": base}))
    small = build_datasets(validate({"Data": dict(base, val_fraction=0.25)}))
    assert (len(full.train), len(full.val), len(full.test)) == (1800, 200, 100)
    assert (len(small.train), len(small.val), len(small.test)) == (1800, 50, 100)  # train and test untouched
    assert np.bincount(full.val.labels).tolist() == [20] * 10
    assert np.bincount(small.val.labels).tolist() == [5] * 10  # stratified: 5 of each class's 20
    assert set(small.val.indices) <= set(full.val.indices)  # a subset of the same carve
    again = build_datasets(validate({"Data": dict(base, val_fraction=0.25)}))
    assert np.array_equal(again.val.indices, small.val.indices)  # seeded
    # both fractions: 10% of train, 10% of val (at least one per class)
    both = build_datasets(validate({"Data": dict(base, fraction=0.1, val_fraction=0.1)}))
    assert (len(both.train), len(both.val)) == (180, 20)
    tiny = build_datasets(validate({"Data": dict(base, val_fraction=0.001)}))
    assert np.bincount(tiny.val.labels).tolist() == [1] * 10


def test_val_fraction_shrinks_a_given_val_split(tmp_path):
    root = tmp_path / "imgs"
    make_class_folders(str(root / "train"), ["a", "b", "c"], 6)
    make_class_folders(str(root / "val"), ["a", "b", "c"], [8, 4, 4], seed=1)
    full = build_datasets(validate({"Data": {"name": "folder", "data_dir": str(root)}}))
    half = build_datasets(validate({"Data": {"name": "folder", "data_dir": str(root), "val_fraction": 0.5}}))
    assert (len(full.train), len(full.val)) == (18, 16) and len(half.train) == 18
    assert np.bincount(half.val.labels).tolist() == [4, 2, 2]  # class proportions kept


def test_val_fraction_regression_and_bounds():
    full = build_datasets(validate({"Global": {"task": "regression"}, "Data": {"name": "diabetes"}}))
    small = build_datasets(validate({"Global": {"task": "regression"},
                                     "Data": {"name": "diabetes", "val_fraction": 0.5}}))
    assert len(small.train) == len(full.train) and len(small.val) == int(np.ceil(len(full.val) * 0.5))
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="Data.val_fraction"):
            validate({"Data": {"val_fraction": bad}})
    cfg = load_config(os.path.join(ROOT, "configs/mlp_digits.yml"), ["Data.val_fraction=0.5"])
    assert cfg["Data"]["val_fraction"] == 0.5 and len(build_datasets(cfg).val) == 180  # digits: 360 -> 180


# --------------------------------------------------------------------------- schedule hints

def sched(name, **kw):
    return validate({"Optimizer": {"lr": 0.1}, "LRScheduler": dict(name=name, **kw)})


@pytest.mark.parametrize("epochs", [1, 3, 30])
def test_warmup_hint_value_fits_the_run(epochs):
    cfg = load_config(os.path.join(ROOT, "configs/gmlp_cifar10.yml"), ["LRScheduler.warmup_epochs=40"])
    w = schedule_warnings(cfg, epochs)
    assert len(w) == 1 and "-o LRScheduler.warmup_epochs=" in w[0]
    value = float(w[0].split("-o LRScheduler.warmup_epochs=")[1].split()[0])
    assert value == pytest.approx(epochs / 10)
    fixed = load_config(os.path.join(ROOT, "configs/gmlp_cifar10.yml"), [f"LRScheduler.warmup_epochs={value}"])
    assert schedule_warnings(fixed, epochs) == []  # the suggested value silences the warning


@pytest.mark.parametrize("cfg,epochs,override", [
    (sched("cosine", warmup_epochs=8), 10, "LRScheduler.warmup_epochs=1"),
    (sched("onecycle", warmup_epochs=1), 10, "LRScheduler.warmup_epochs=0"),
    (sched("step", step_size=30), 30, "LRScheduler.step_size=10"),
    (sched("multistep", milestones=[30, 60, 90]), 60, "LRScheduler.milestones=[30,45]"),
    (sched("multistep", milestones=[20, 10]), 30, "LRScheduler.milestones=[10,20]"),
    (sched("exponential", gamma=1.0), 10, "LRScheduler.gamma=0.95"),
    (sched("cosine", eta_min=0.5), 10, "LRScheduler.eta_min=0"),
    (sched("polynomial", end_lr=0.5), 10, "LRScheduler.end_lr=0"),
    (sched("plateau", monitor="acc", mode="min"), 10, "LRScheduler.mode=max"),
    (sched("plateau", monitor="loss", mode="max"), 10, "LRScheduler.mode=min"),
    (sched("plateau", min_lr=0.2), 10, "LRScheduler.min_lr=0"),
    (sched("cosine", warmup_epochs=1, warmup_start_lr=0.5), 10, "LRScheduler.warmup_start_lr=0"),
])
def test_every_schedule_warning_names_its_override(cfg, epochs, override):
    w = schedule_warnings(cfg, epochs)
    assert w and all("fix: -o LRScheduler." in x for x in w), w
    assert any(f"-o {override}" in x for x in w), w
    key, value = override.split("=", 1)
    section, name = key.split(".")
    fixed = dict(cfg[section], **{name: yaml.safe_load(value)})
    rest = schedule_warnings(validate({"Optimizer": cfg["Optimizer"], section: fixed}), epochs)
    assert not any(name in x for x in rest), rest  # applying the override removes that warning
