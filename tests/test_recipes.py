"""The README's "Extend it" recipes, followed word for word in a copy of the project.

Every fenced block of that section is applied as the text around it says: a block whose first
line is ``# <path>`` is that file, ``# appended to <path>`` is added to its end, an unnamed Python
block replaces the line of the same import in the file the text just named, and each ``bash``
command is run. The runs must train and write what a run writes.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.layering import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def extend_section():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("\n## Extend it\n")
    return text[start: text.index("\n## ", start + 1)]


def blocks(section):
    """(language, code, the prose before the block) for each fenced block, in order."""
    out, pos = [], 0
    for m in re.finditer(r"```(\w+)\n(.*?)```", section, re.S):
        out.append((m.group(1), m.group(2), section[pos: m.start()]))
        pos = m.end()
    return out


def apply_recipes(project):
    """Write/append/replace what the README says; returns the bash commands in order."""
    commands = []
    for lang, code, before in blocks(extend_section()):
        first = code.splitlines()[0]
        if lang == "bash":
            commands += [ln for ln in code.splitlines() if ln.strip()]
        elif m := re.match(r"# appended to (\S+)$", first):
            with open(project / m.group(1), "a", encoding="utf-8") as f:
                f.write("\n\n" + code)
        elif m := re.match(r"# (\S+\.(?:py|yml))$", first):
            (project / m.group(1)).write_text(code, encoding="utf-8")
        else:  # an edited import line in the last file the text names
            target = project / re.findall(r"`([\w/]+\.py)`", before)[-1]
            prefix = code.split(" import ")[0] + " import "
            lines = target.read_text(encoding="utf-8").splitlines()
            hits = [i for i, ln in enumerate(lines) if ln.startswith(prefix)]
            assert len(hits) == 1, (target, prefix)
            lines[hits[0]] = code.strip()
            target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return commands


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    dst = tmp_path_factory.mktemp("project")
    for d in ("models", "utils", "tools", "configs"):
        shutil.copytree(os.path.join(ROOT, d), dst / d, ignore=shutil.ignore_patterns("__pycache__"))
    commands = apply_recipes(dst)
    results = []
    for cmd in commands:
        args = cmd.split()
        assert args[0] == "python"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        results.append((cmd, subprocess.run([sys.executable, *args[1:]], cwd=dst, env=env,
                                            capture_output=True, text=True, timeout=600)))
    return dst, results


def the_run(project, config_name, index=0):
    """The run directory of ``config_name`` made by the ``index``-th command that trained it, and its metrics."""
    runs = sorted((project / "output" / config_name).iterdir())  # timestamp names: in launch order
    with open(runs[index] / "metrics.json", encoding="utf-8") as f:
        return runs[index], json.load(f)


def test_the_recipes_are_four_commands_that_all_succeed(project):
    _, results = project
    assert [cmd.split()[1] for cmd, _ in results] == ["tools/train.py"] * 3 + ["my_train.py"]
    for cmd, r in results:
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


def test_own_model_trains_with_its_own_argument(project):
    dst, _ = project
    run_dir, metrics = the_run(dst, "tiny_net_digits")
    assert metrics["model"] == "tiny_net" and metrics["epochs_run"] == 1
    # width 32: conv 1x32x3x3 + 32, head 32x10 + 10
    assert metrics["params"] == 32 * 9 + 32 + 32 * 10 + 10
    assert 0.0 <= metrics["final"]["acc"] <= 1.0 and (run_dir / "best_model.pdparams").is_file()


def test_own_dataset_trains_and_is_listed(project):
    dst, _ = project
    run_dir, metrics = the_run(dst, "cnn_checkers")
    assert metrics["model"] == "cnn" and metrics["epochs_run"] == 1
    assert metrics["final"]["samples"] == 40  # val_split 0.2 of the 200 boards
    r = subprocess.run([sys.executable, "-c", "from utils.data import list_datasets; print(list_datasets())"],
                       cwd=dst, capture_output=True, text=True)
    assert "'checkers'" in r.stdout


def test_own_schedule_sets_the_learning_rate(project):
    dst, _ = project
    run_dir, metrics = the_run(dst, "cnn_digits", 0)  # my_train.py trains cnn_digits after it
    assert metrics["epochs_run"] == 2
    r = subprocess.run([sys.executable, "-c", "import json, sys; from utils.training.vdl_log import log_files, read_scalars; "
                        "print(json.dumps(read_scalars(log_files(sys.argv[1]), {'train/lr'})['train/lr']))", str(run_dir)],
                       cwd=dst, capture_output=True, text=True)
    warmup = metrics["global_step"] // 2  # cnn_digits warms up for one of its two epochs
    steps, lrs = zip(*[(s, v) for s, v in json.loads(r.stdout) if s > warmup])
    assert len(lrs) >= 3
    # after the warmup, linear: equal drops per step, unlike the configs' cosine
    slopes = [(lrs[i + 1] - lrs[i]) / (steps[i + 1] - steps[i]) for i in range(len(lrs) - 1)]
    assert max(slopes) < 0 and max(slopes) - min(slopes) < 1e-4 * abs(slopes[0])  # VisualDL stores float32


def test_own_callback_hears_every_evaluation(project):
    _, results = project
    out = results[-1][1].stdout
    lines = re.findall(r"^epoch (\d+): acc ([\d.]+), best ([\d.]+)$", out, re.M)
    assert [int(e) for e, _, _ in lines] == [1, 2]
    accs = [float(a) for _, a, _ in lines]
    assert float(lines[-1][2]) == pytest.approx(max(accs), abs=1e-4)
