"""PaddleClas habits: its key names read as ours or refused with our key and unit, hints that never
cross a unit, eval with -c and Global.pretrained_model, PaddleX 3 list names, reruns from a run's
config.yml under the original name, -o Arch.name dropping the file's model-specific keys."""
import json
import os
import subprocess
import sys

import pytest
import yaml
from tool_asserts import assert_user_error

from utils.config import SCHEMA, dump_config, load_config, model_kwargs
from utils.config.aliases import PADDLECLAS, UNIT_WORDS, key_hint
from utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "configs", "gmlp_digits.yml")

# The layout of PaddleClas's ppcls/configs/ImageNet/ResNet/ResNet50.yaml, sized for digits.
PADDLECLAS_CFG = f"""_base_: [{DIGITS}]
Global:
  checkpoints: null
  pretrained_model: null
  eval_during_train: True
  eval_interval: 2
  print_batch_step: 5
  save_interval: 3
  use_visualdl: False
  image_shape: [3, 8, 8]
  epochs: 4
Arch:
  name: gmlp_tiny
  class_num: 10
Loss:
  Train:
    - CELoss:
        weight: 1.0
        epsilon: 0.1
  Eval:
    - CELoss:
        weight: 1.0
Optimizer:
  name: Momentum
  momentum: 0.9
  lr:
    name: Piecewise
    learning_rate: 0.2
    decay_epochs: [30, 60, 90]
    values: [0.2, 0.02, 0.002, 0.0002]
    warmup_epoch: 1
  regularizer:
    name: 'L2'
    coeff: 0.0001
DataLoader:
  Train:
    sampler:
      name: DistributedBatchSampler
      batch_size: 64
      drop_last: True
      shuffle: True
    loader:
      num_workers: 0
      use_shared_memory: False
  Eval:
    sampler:
      batch_size: 100
Metric:
  Eval:
    - TopkAcc:
        topk: [1, 3]
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def run_tool(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


# --------------------------------------------------------------------------- PaddleClas names

def test_paddleclas_layout_reads_as_our_keys(tmp_path, capsys):
    cfg = load_config(write(tmp_path, "pc.yml", PADDLECLAS_CFG))
    g = cfg["Global"]
    assert (g["eval_every_epochs"], g["log_every_iters"], g["epochs"]) == (2, 5, 4)
    assert cfg["Checkpoint"]["save_every_epochs"] == 3 and cfg["VisualDL"]["enable"] is False
    assert cfg["Data"]["num_classes"] == 10 and cfg["Data"]["image_size"] == 8
    assert cfg["Loss"] == {"name": "CrossEntropy", "label_smoothing": 0.1}
    assert cfg["Optimizer"]["lr"] == 0.2 and cfg["Optimizer"]["weight_decay"] == 0.0001
    s = cfg["LRScheduler"]
    assert (s["name"], s["milestones"], s["warmup_epochs"]) == ("multistep", [30, 60, 90], 1.0)
    assert s["gamma"] == pytest.approx(0.1)
    d = cfg["DataLoader"]
    assert (d["batch_size"], d["eval_batch_size"], d["drop_last"], d["use_shared_memory"]) == (64, 100, True, False)
    assert cfg["Metric"]["topk"] == [1, 3]
    err = capsys.readouterr().err
    assert "note: Global.eval_interval (PaddleClas) read as Global.eval_every_epochs: 2" in err
    assert "Checkpoint.save_every_epochs" in err and "Global.log_every_iters" in err
    # the note names our key once per process, not at every load
    load_config(write(tmp_path, "pc2.yml", PADDLECLAS_CFG))
    assert "eval_interval" not in capsys.readouterr().err


@pytest.mark.parametrize("override, key, value", [
    ("Global.eval_interval=3", "Global.eval_every_epochs", 3),
    ("Global.print_batch_step=7", "Global.log_every_iters", 7),
    ("Global.save_interval=2", "Checkpoint.save_every_epochs", 2),
    ("Global.use_visualdl=false", "VisualDL.enable", False),
    ("Arch.class_num=10", "Data.num_classes", 10),
    ("Global.class_num=10", "Data.num_classes", 10),
    ("Global.image_shape=[3,16,16]", "Data.image_size", 16),
    ("Optimizer.lr.name=Cosine", "LRScheduler.name", "cosine"),
    ("Optimizer.lr.learning_rate=0.03", "Optimizer.lr", 0.03),
    ("Optimizer.lr.warmup_epoch=2", "LRScheduler.warmup_epochs", 2.0),
    ("DataLoader.Train.sampler.batch_size=32", "DataLoader.batch_size", 32),
    ("DataLoader.Eval.sampler.batch_size=50", "DataLoader.eval_batch_size", 50),
    ("EMA.decay=0.99", "EMA.decay", 0.99),
    ("Global.epochs=2", "Global.epochs", 2),
])
def test_paddleclas_overrides(override, key, value):
    cfg = load_config(DIGITS, [override])
    sec, k = key.split(".")
    assert cfg[sec][k] == value
    assert key in cfg["_meta"]["overridden"]


def test_a_later_file_overrides_either_spelling(tmp_path):
    base = write(tmp_path, "base.yml", f"_base_: [{DIGITS}]\nGlobal: {{eval_every_epochs: 5}}\n")
    child = write(tmp_path, "child.yml", "_base_: [base.yml]\nGlobal: {eval_interval: 2}\n")
    assert load_config(base)["Global"]["eval_every_epochs"] == 5
    assert load_config(child)["Global"]["eval_every_epochs"] == 2
    # and -o with our name beats the file's PaddleClas name
    assert load_config(child, ["Global.eval_every_epochs=4"])["Global"]["eval_every_epochs"] == 4


@pytest.mark.parametrize("text, fragments", [
    ("Global:\n  eval_interval: 2\n  eval_every_epochs: 3\n", ["c.yml:3", "Global.eval_interval", "Global.eval_every_epochs", "keep one"]),
    ("Optimizer:\n  lr:\n    learning_rate: 0.1\n    values: [0.2, 0.02]\n", ["Optimizer.lr", "keep one"]),
    ("Optimizer:\n  lr:\n    name: Cosine\n    bogus: 1\n", ["c.yml:5", "'Optimizer.lr.bogus'", "Optimizer.lr.name"]),
    ("Global:\n  image_shape: [3, 32, 28]\n", ["c.yml:3", "Data.image_size", "pixels"]),
    ("Global:\n  eval_during_train: false\n", ["c.yml:3", "Global.eval_every_epochs", "epochs"]),
    ("Optimizer:\n  lr:\n    values: [0.1, 0.05, 0.001]\n", ["c.yml:4", "LRScheduler.gamma"]),
    ("Optimizer:\n  lr:\n    name: Foo\n", ["c.yml:4", "LRScheduler.name", "cosine"]),
    ("Loss:\n  Train:\n    - CELoss: {weight: 0.5}\n", ["c.yml:3", "Loss.name"]),
    ("DataLoader:\n  Train:\n    dataset:\n      transform_ops: []\n", ["c.yml:5", "Transforms.train"]),
    ("Global:\n  save_inference_dir: ./inference\n", ["c.yml:3", "tools/export.py"]),
])
def test_refused_paddleclas_keys_name_ours(tmp_path, text, fragments):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "c.yml", f"_base_: [{DIGITS}]\n" + text))
    msg = str(e.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg


def test_nested_override_not_in_table_names_the_mapped_ones():
    with pytest.raises(ConfigError, match=r"'DataLoader\.Train\.sampler\.foo' has no equivalent.*DataLoader\.Train\.sampler\.batch_size"):
        load_config(DIGITS, ["DataLoader.Train.sampler.foo=1"])
    with pytest.raises(ConfigError, match="two parts"):  # not a PaddleClas prefix: the old message
        load_config(DIGITS, ["Global.a.b=1"])


def test_filelist_dataset_from_paddleclas_dataloader(tmp_path):
    cfg = load_config(write(tmp_path, "c.yml", f"_base_: [{DIGITS}]\nDataLoader:\n  Train:\n    dataset:\n"
                            "      name: ImageNetDataset\n      image_root: ./dataset/flowers/\n"
                            "      cls_label_path: ./dataset/flowers/train_list.txt\n"
                            "  Eval:\n    dataset:\n      name: ImageNetDataset\n      image_root: ./dataset/flowers/\n"
                            "      cls_label_path: ./dataset/flowers/val_list.txt\n"))
    d = cfg["Data"]
    assert (d["name"], d["data_dir"], d["train_list"], d["val_list"]) == \
        ("filelist", "./dataset/flowers/", "train_list.txt", "val_list.txt")


# --------------------------------------------------------------------------- did-you-mean

@pytest.mark.parametrize("section, key, wrong", [
    ("Global", "eval_intervl", "eval_every_iters"),      # misspelt PaddleClas name: points at its mapping
    ("Global", "print_batch_stp", "print_flops"),
    ("Global", "save_intervals", "log_every_iters"),
    ("Global", "print_step", "print_flops"),
    ("Global", "eval_freq", "eval_every_iters"),
    ("Checkpoint", "save_every_epoch_n", "save_every_minutes"),
])
def test_hints_never_suggest_another_unit_or_meaning(section, key, wrong):
    hint = key_hint(section, key, SCHEMA[section])
    assert wrong not in hint, hint


def test_misspelt_paddleclas_name_points_at_our_key():
    assert "Global.eval_every_epochs" in key_hint("Global", "eval_intervl", SCHEMA["Global"])
    assert "Global.log_every_iters" in key_hint("Global", "print_batch_stepp", SCHEMA["Global"])


@pytest.mark.parametrize("section, key, right", [
    ("Optimizer", "lrr", "lr"), ("Global", "epoch", "epochs"), ("FineTune", "head_epoch", "head_epochs"),
    ("Global", "eval_every_epoch", "eval_every_epochs"), ("Global", "eval_every_iter", "eval_every_iters"),
    ("DataLoader", "batchsize", "batch_size"), ("Checkpoint", "save_every_epoch", "save_every_epochs"),
])
def test_typo_hints_still_given(section, key, right):
    assert key_hint(section, key, SCHEMA[section]) == f" (did you mean '{right}'?)"


def test_every_suggestion_keeps_the_unit():
    """Over every schema key with its unit word swapped, a suggestion never counts in another unit."""
    swaps = {"epochs": "iters", "iters": "epochs", "minutes": "epochs"}
    for sec, keys in SCHEMA.items():
        for k in keys:
            parts = k.split("_")
            for i, p in enumerate(parts):
                if p in swaps:
                    wrong = "_".join(parts[:i] + [swaps[p][:-1]] + parts[i + 1:])  # eval_every_epochs -> eval_every_iter
                    hint = key_hint(sec, wrong, [c for c in keys if c != "_".join(parts[:i] + [swaps[p]] + parts[i + 1:])])
                    if "did you mean" in hint:
                        got = hint.split("'")[1]
                        have = {UNIT_WORDS[t] for t in got.split("_") if t in UNIT_WORDS}
                        assert have in (set(), {UNIT_WORDS[swaps[p]]}), (sec, wrong, hint)


def test_unknown_file_key_error_has_no_cross_unit_hint(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "c.yml", f"_base_: [{DIGITS}]\nGlobal:\n  print_batch_stp: 5\n"))
    msg = str(e.value)
    assert "c.yml:3" in msg and "did you mean 'print_flops'" not in msg
    assert "(PaddleClas's 'Global.print_batch_step'? here: Global.log_every_iters)" in msg


def test_table_targets_are_schema_keys():
    for name, alias in PADDLECLAS.items():
        if alias.ours:
            sec, k = alias.ours.split(".")
            assert k in SCHEMA[sec], name


# --------------------------------------------------------------------------- PaddleX 3 lists

def paddlex3_dataset(root):
    from utils.data.synthetic import make_filelist

    make_filelist(str(root), ["rose", "tulip", "iris"], 6, 2, label_file="id_name")
    os.rename(root / "train_list.txt", root / "train.txt")
    os.rename(root / "val_list.txt", root / "val.txt")
    os.rename(root / "labels.txt", root / "label.txt")


def test_paddlex3_list_names_are_found(tmp_path):
    from utils.config import validate
    from utils.data import build_datasets

    paddlex3_dataset(tmp_path)
    b = build_datasets(validate({"Data": {"name": "filelist", "data_dir": str(tmp_path)}}))
    assert (len(b.train), len(b.val)) == (18, 6)
    assert b.class_names == ["rose", "tulip", "iris"]


def test_paddlex2_names_win_and_missing_lists_name_both(tmp_path):
    from utils.config import validate
    from utils.data import build_datasets
    from utils.data.synthetic import make_filelist
    from utils.errors import DataError

    make_filelist(str(tmp_path / "both"), ["a", "b"], 4, 0, label_file="names")
    (tmp_path / "both" / "train.txt").write_text("missing.jpg 0\n")  # would fail if read
    b = build_datasets(validate({"Data": {"name": "filelist", "data_dir": str(tmp_path / "both"), "val_split": 0}}))
    assert len(b.train) == 8 and b.class_names == ["a", "b"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"train_list\.txt nor train\.txt \(PaddleX 3\)"):
        build_datasets(validate({"Data": {"name": "filelist", "data_dir": str(tmp_path / "empty")}}))


# --------------------------------------------------------------------------- runs, rerun, eval

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from utils.trainer import train

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(os.path.join(ROOT, "configs", "mlp_digits.yml"),
                      [f"Global.output_dir={out}", "Global.verbose=0", "Global.epochs=2", "Global.run_name=r"])
    m = train(cfg, print_fn=lambda *a, **k: None)
    return out, m


def test_saved_config_reruns_under_the_original_name(trained, tmp_path):
    out, m = trained
    saved = os.path.join(m["run_dir"], "config.yml")
    assert open(saved).readline() == "# config_name: mlp_digits\n"
    cfg = load_config(saved, [f"Global.output_dir={tmp_path}", "Global.run_name=again"])
    assert cfg["_meta"]["config_name"] == "mlp_digits"
    from utils.rundir import new_run_dir

    assert new_run_dir(cfg) == os.path.join(str(tmp_path), "mlp_digits", "again")
    # a copy under another name is a config of its own
    copy = tmp_path / "my_exp.yml"
    copy.write_text(open(saved).read())
    assert load_config(str(copy))["_meta"]["config_name"] == "my_exp"


def test_dump_config_name_line_is_a_comment(tmp_path):
    cfg = load_config(DIGITS)
    path = str(tmp_path / "config.yml")
    dump_config(cfg, path)
    assert yaml.safe_load(open(path)) == {k: v for k, v in cfg.items() if k != "_meta"}
    assert load_config(path)["_meta"]["config_name"] == "gmlp_digits"
    cfg["_meta"]["config_name"] = "../escape"  # never a path out of Global.output_dir
    dump_config(cfg, path)
    assert load_config(path)["_meta"]["config_name"] == "config"


def test_eval_with_config_and_pretrained_model(trained, tmp_path):
    out, m = trained
    run = m["run_dir"]
    ref = tmp_path / "ref.json"
    assert run_tool("tools/eval.py", run, "--json", str(ref)).returncode == 0
    got = tmp_path / "got.json"
    proc = run_tool("tools/eval.py", "-c", "configs/mlp_digits.yml", "-o",
                    f"Global.pretrained_model={run}/best_model", "--json", str(got))
    assert proc.returncode == 0, proc.stderr
    a, b = json.load(open(ref)), json.load(open(got))
    assert a["acc"] == b["acc"] and a["loss"] == pytest.approx(b["loss"]) and a["samples"] == b["samples"]
    assert b["checkpoint"] == os.path.join(run, "best_model")
    # the .pdparams file itself works too, and without --json the report goes beside the weights
    proc = run_tool("tools/eval.py", "-c", "configs/mlp_digits.yml", "-o",
                    f"Global.pretrained_model={run}/latest.pdparams", "--split", "train")
    assert proc.returncode == 0, proc.stderr
    assert os.path.isfile(os.path.join(run, "eval_train.json"))


def test_eval_without_weights_is_one_line(tmp_path):
    assert_user_error(run_tool("tools/eval.py", "-c", "configs/mlp_digits.yml"), "Global.pretrained_model")
    assert_user_error(run_tool("tools/eval.py"), "run directory", "Global.pretrained_model")
    assert_user_error(run_tool("tools/eval.py", "-c", "configs/mlp_digits.yml", "-o",
                               f"Global.pretrained_model={tmp_path}/nope"), "Global.pretrained_model", "nope")


# --------------------------------------------------------------------------- -o Arch.name

def test_arch_name_override_drops_the_files_model_keys(capsys):
    cfg = load_config(DIGITS, ["Arch.name=cnn"])
    assert cfg["Arch"]["patch_size"] == 2  # still there until the model is built
    kwargs = model_kwargs(cfg)
    assert kwargs == {} and not {"patch_size", "dim", "depth"} & set(cfg["Arch"])
    err = capsys.readouterr().err
    assert "dropped Arch.patch_size, Arch.dim, Arch.depth" in err and "gmlp_digits.yml" in err
    assert model_kwargs(cfg) == {}  # decided once


def test_arch_keys_kept_when_the_new_model_takes_them():
    cfg = load_config(DIGITS, ["Arch.name=gmlp_small"])
    assert model_kwargs(cfg) == {"patch_size": 2, "dim": 64, "depth": 4}


def test_arch_keys_given_with_o_stay_errors():
    from models.registry import check_kwargs

    cfg = load_config(DIGITS, ["Arch.name=cnn", "Arch.patch_size=4"])
    kwargs = model_kwargs(cfg)
    assert kwargs == {"patch_size": 4}
    with pytest.raises(ConfigError, match="Arch.patch_size"):
        check_kwargs("cnn", kwargs)


def test_arch_override_builds_and_trains_one_epoch(tmp_path):
    from utils.trainer import train

    cfg = load_config(DIGITS, ["Arch.name=cnn", f"Global.output_dir={tmp_path}", "Global.epochs=1",
                               "Global.verbose=0", "Global.run_name=r", "VisualDL.enable=false"])
    m = train(cfg, print_fn=lambda *a, **k: None)
    saved = yaml.safe_load(open(os.path.join(m["run_dir"], "config.yml")))
    assert saved["Arch"]["name"] == "cnn" and "patch_size" not in saved["Arch"]
    assert m["run_dir"] == os.path.join(str(tmp_path), "gmlp_digits", "r")
