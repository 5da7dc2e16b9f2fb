"""Tools print what a user needs: one line per tuning trial, no stray warnings, no RST markup,
no files written into the checkout unasked; tune.py searches model families."""
import csv
import glob
import hashlib
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = os.path.join(ROOT, "configs", "mlp_digits.yml")
FAST = ["Global.print_flops=false", "Doctor.enable=false", "Global.epochs=1"]
NOISE = ("UserWarning", "ccache", "Traceback")


def run(*args, cwd=ROOT):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def overrides(*items):
    return [a for o in items for a in ("-o", o)]


def assert_clean(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for word in NOISE:
        assert word not in proc.stderr, proc.stderr


def test_tune_prints_one_line_per_trial_and_verbose_prints_the_logs(tmp_path):
    space = tmp_path / "lr.yml"
    space.write_text("Optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    args = ["tools/tune.py", "-c", MLP, "--space", str(space), "--trials", "3",
            *overrides(f"Global.output_dir={tmp_path}", *FAST)]
    proc = run(*args)
    assert_clean(proc)
    lines = proc.stdout.splitlines()
    trial_lines = [ln for ln in lines if ln.startswith("[")]
    assert [ln.split()[0] for ln in trial_lines] == ["[1/3]", "[2/3]", "[3/3]"]
    assert all(" COMPLETE acc " in ln and "Optimizer.lr=" in ln and " elapsed" in ln for ln in trial_lines)
    assert "left" in trial_lines[0] and "left" not in trial_lines[-1]
    # header + 3 trials + the summary (5 lines: totals, best, best config, files); no training log
    assert not any("run directory:" in ln or "poch" in ln for ln in lines) and len(lines) <= 9, proc.stdout
    verbose = run(*args, "--verbose", "--study", "v")
    assert_clean(verbose)
    logs = verbose.stdout.splitlines()
    # every trial's training log, indented: its run directory line and its epoch lines
    assert sum("run directory:" in ln for ln in logs) == 3
    assert sum(ln.startswith("    ") and "poch 1" in ln for ln in logs) >= 3


def test_failed_trial_shows_its_last_lines(tmp_path):
    """A trial that crashes prints its error's tail under its one line (the traceback is not lost)."""
    from utils.tune import prepare, run_study

    space = tmp_path / "s.yml"
    space.write_text("Optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-2}\n")
    setup = prepare(MLP, str(space), [f"Global.output_dir={tmp_path}", "Global.verbose=0", *FAST])
    import utils.tune.study as study_mod

    lines = []
    real = study_mod.train

    def crash(cfg, print_fn, callbacks):
        print_fn("epoch 1/1 step 1/23 loss 2.3")
        raise RuntimeError("boom in the model")

    study_mod.train = crash
    try:
        run_study(setup, 1, print_fn=lines.append, verbose=False)
    finally:
        study_mod.train = real
    head = next(i for i, ln in enumerate(lines) if ln.startswith("[1/1] trial 0 FAIL"))
    tail = lines[head + 1:]
    assert "RuntimeError: boom in the model" in lines[head]
    assert any("epoch 1/1 step 1/23" in ln for ln in tail) and any("RuntimeError" in ln for ln in tail)


def test_tune_searches_model_families_with_their_own_arguments(tmp_path):
    space = tmp_path / "arch.yml"
    space.write_text("Arch.name: {type: categorical, choices: [mlp, cnn]}\n"
                     "Arch.hidden: {type: categorical, choices: [[32]]}\n"
                     "Arch.widths: {type: categorical, choices: [[8, 16]]}\n")
    proc = run("tools/tune.py", "-c", MLP, "--space", str(space), "--trials", "2", "--sampler", "grid",
               *overrides(f"Global.output_dir={tmp_path}", *FAST))
    assert proc.returncode == 0, proc.stderr
    study = tmp_path / "mlp_digits" / "tune_arch"
    with open(study / "trials.csv", newline="") as f:
        rows = {r["Arch.name"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"mlp", "cnn"} and all(r["state"] == "COMPLETE" for r in rows.values())
    # each family got only the arguments it takes
    assert rows["mlp"]["Arch.hidden"] == "[32]" and rows["mlp"]["Arch.widths"] == ""
    assert rows["cnn"]["Arch.widths"] == "[8, 16]" and rows["cnn"]["Arch.hidden"] == ""
    cnn = yaml.safe_load(open(os.path.join(rows["cnn"]["run_dir"], "config.yml")))["Arch"]
    mlp = yaml.safe_load(open(os.path.join(rows["mlp"]["run_dir"], "config.yml")))["Arch"]
    assert cnn["widths"] == [8, 16] and "hidden" not in cnn
    assert mlp["hidden"] == [32] and "widths" not in mlp


@pytest.mark.parametrize("text, fragment", [
    ("Arch.name: {type: categorical, choices: [mlp, cnn]}\nArch.depth: {type: int, low: 2, high: 4}\n",
     "has no argument 'depth'"),
    ("Arch.name: {type: categorical, choices: [mlp, cnn]}\nArch.widths: {type: float, low: 1, high: 4}\n",
     "takes a list here"),
])
def test_arch_arguments_no_searched_family_takes_are_errors(tmp_path, text, fragment):
    from utils.config import load_config
    from utils.errors import ConfigError
    from utils.tune import load_space

    path = tmp_path / "s.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as e:
        load_space(str(path), load_config(MLP))
    assert "s.yml:2" in str(e.value) and "\n" not in str(e.value)


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_config_doc_writes_only_when_asked(tmp_path):
    readme = os.path.join(ROOT, "configs", "README.md")
    before = (_digest(readme), os.stat(readme).st_mtime_ns)
    helped = run("tools/config_doc.py", "--help")
    assert helped.returncode == 0 and "--write" in helped.stdout
    printed = run("tools/config_doc.py")
    assert_clean(printed)
    assert printed.stdout.startswith("# Config reference") and "| `RandomResizedCrop` |" in printed.stdout
    out = tmp_path / "ref.md"
    assert_clean(run("tools/config_doc.py", "-o", str(out)))
    assert out.read_text() == printed.stdout
    assert (_digest(readme), os.stat(readme).st_mtime_ns) == before


def test_visualize_batch_without_run_writes_under_output(tmp_path):
    proc = run(os.path.join(ROOT, "tools", "visualize.py"), "batch", "-c", os.path.join(ROOT, "configs", "cnn_digits.yml"),
               cwd=tmp_path)
    assert_clean(proc)
    assert glob.glob(str(tmp_path / "output" / "vis" / "batch_cnn_digits.png"))
    assert sorted(os.listdir(tmp_path)) == ["output"]


def test_tool_descriptions_have_no_rst_markup():
    for path in sorted(glob.glob(os.path.join(ROOT, "tools", "*.py"))):
        proc = run(path, "--help")
        assert proc.returncode == 0, (path, proc.stderr)
        assert "``" not in proc.stdout, (path, proc.stdout[:300])
