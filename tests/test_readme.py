"""Every command of README.md and README_zh.md, run in order in a copy of the project, as a new user would.

Commands are the lines of the fenced ``bash`` blocks (a trailing ``\\`` joins lines) and the inline code
spans that start with ``python `` or ``visualdl `` and name no metavariable (``CFG``, ``RUN_DIR``,
``[--opt]``: those are usage patterns). Placeholders are filled as the README means them:
``output/<config>/<timestamp>`` (or ``<run>``) is that config's newest run, a bare ``<run>`` the run the
previous commands made last. Paths the README tells the user to provide are made first: synthetic
CIFAR at ``data/cifar-10-python.tar.gz``, class folders at ``path/to/images``, a file-list dataset at
``path/to/dataset``, ``images/`` and ``val_list.txt`` to classify; the "Extend it" recipes are applied
as ``tests/test_recipes.py`` applies them. A command whose comment says ``Ctrl-C`` is interrupted with
SIGINT once it has written a checkpoint and must exit 130; a ``visualdl`` server must answer HTTP and
is then stopped; every other command must exit 0. What cannot run here is in ``SKIPPED`` with its
reason, and the test fails when that list and the README drift apart.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.layering import ROOT
from tests.test_recipes import apply_recipes

COPIED_DIRS = ("models", "utils", "tools", "configs", "bench", "docs")
COPIED_FILES = ("ruff.toml", "pytest.ini", "requirements.txt", "requirements-dev.txt", "requirements-paddlex.txt")
BENCH = "benchmark: several minutes of timed runs that print figures; not a usage step"
SKIPPED = {
    "pip install -r requirements.txt": "installs packages; the test runs in the environment it installed",
    "pip install -r requirements-dev.txt": "installs packages; the test runs in the environment it installed",
    "python -m pytest -q": "the whole suite, this test included (several minutes)",
    "pip uninstall -y paddlepaddle": "would remove Paddle from the environment the test runs in",
    "python -m pip install paddlepaddle-gpu==3.3.1 -i https://www.paddlepaddle.org.cn/packages/stable/cu126/":
        "GPU wheel: needs CUDA and the network",
    "python tools/train.py -c configs/gmlp_cifar10.yml -o Global.device=gpu": "needs a GPU",
    "python tools/train.py -c configs/cnn_folder.yml -o Arch.name=mobilenet_v2 -o Arch.pretrained=imagenet "
    "-o Data.data_dir=path/to/images": "downloads ImageNet weights (network)",
    'python -m paddle.distributed.launch --gpus "0,1,2,3" --log_dir output/log tools/train.py -c '
    "configs/gmlp_cifar10.yml": "needs 4 GPUs",
    'python -m paddle.distributed.launch --gpus "0,1,2,3" tools/train.py --resume output/gmlp_cifar10/<timestamp>':
        "needs 4 GPUs (and the run above)",
    "python tools/tune.py -c configs/mlp_digits.yml --space configs/spaces/lr_wd_digits.yml --trials 20 "
    "--storage postgresql://user:password@dbhost:5432/studies": "needs a PostgreSQL server at dbhost "
                                                                 "(tests/test_tune_postgres.py runs one)",
    ".venv-paddlex/bin/python -m pip install -r requirements-paddlex.txt": "installs PaddleX from the network "
                                                                           "(.ci/run does, then tests/test_export.py -k paddlex)",
    "python bench/bench_overhead.py": BENCH,
    "python bench/bench_data.py": BENCH + "; reads the real CIFAR-10 JPEGs from ../shared/data",
    "python bench/bench_step.py": BENCH,
    "python bench/bench_cifar.py": BENCH + "; reads the real CIFAR-10 JPEGs from ../shared/data",
    "python bench/bench_cifar.py --minutes 8 --fit --configs configs/gmlp_cifar10.yml configs/googlenet_cifar10.yml "
    "configs/cnn_cifar10.yml configs/cnn_sa_cifar10.yml configs/resnet20_cifar10.yml configs/resnet20_sa_cifar10.yml":
        BENCH + "; reads the real CIFAR-10 JPEGs from ../shared/data",
    "python bench/bench_lr_find.py": BENCH,
    "python bench/bench_doctor.py": BENCH,
    "python bench/bench_vdl.py": BENCH,
    "python bench/bench_tune.py": BENCH + " (about 3 minutes, says the README)",
    "python bench/bench_kills.py": BENCH,
}
RUN_NAME = re.compile(r"^\d{8}-\d{6}(-\d+)?$")
PLACEHOLDERS = {"<时间戳>": "<timestamp>", "<空闲端口>": "<free>"}
COMMAND_TIMEOUT = 300


def readme_commands(name: str) -> list[tuple[str, str]]:
    """(command, comment) in document order; placeholders in English, comments as written."""
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        text = f.read()
    out = []
    for m in re.finditer(r"```(\w*)\n(.*?)```|`((?:python|visualdl) [^`\n]+)`", text, re.S):
        if m.group(3):  # inline span
            if not re.search(r"(?<![\w.<])[A-Z][A-Z_]*(?![\w<])|\[--", m.group(3)):
                out.append((m.group(3), ""))
            continue
        if m.group(1) != "bash":
            continue
        for line in m.group(2).replace("\\\n", " ").splitlines():
            cmd, _, comment = line.strip().partition("  #")
            if cmd and not cmd.startswith("#"):
                out.append((" ".join(cmd.split()), comment.strip()))
    for zh, en in PLACEHOLDERS.items():
        out = [(c.replace(zh, en), note) for c, note in out]
    return out


def run_dirs(project) -> list:
    """Every timestamp-named run directory under output/, oldest first by creation."""
    found = [p for p in (project / "output").glob("*/*") if RUN_NAME.match(p.name)] if (project / "output").exists() else []
    return sorted(found, key=lambda p: (p.stat().st_ctime_ns, p.name))


def newest(project, config: str) -> str:
    runs = [p for p in run_dirs(project) if p.parent.name == config]
    assert runs, f"no run of {config} yet"
    return str(runs[-1].relative_to(project))


def fill(cmd: str, project, last_run: str | None) -> str:
    cmd = re.sub(r"output/(\w+)/<(?:timestamp|run)>", lambda m: newest(project, m.group(1)), cmd)
    if "<run>" in cmd:
        assert last_run, cmd
        cmd = cmd.replace("<run>", last_run)
    return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_inputs(project) -> None:
    """What the README asks the user to provide, made as it says."""
    sys.path.insert(0, str(project))
    from utils.data.synthetic import make_cifar_tarball, make_class_folders, make_filelist
    # Small on purpose: the configs train 30 epochs, and this data only stands in for the real archive.
    make_cifar_tarball(str(project / "data" / "cifar-10-python.tar.gz"), n_train=60, n_test=20)
    make_class_folders(str(project / "path" / "to" / "images"), 3, 12)
    make_filelist(str(project / "path" / "to" / "dataset"), 3, n_train_per_class=12, n_val_per_class=4)
    make_class_folders(str(project / "images"), ["a", "b"], 2, size=28, fmt="png", gray=True)
    shutil.copy(project / "docs" / "digit.png", project / "images" / "digit.png")
    (project / "val_list.txt").write_text("images/a/0000.png 0\nimages/b/0001.png 1\n", encoding="utf-8")
    apply_recipes(project)


def interrupt_after_checkpoint(proc, project, started: float) -> None:
    """SIGINT once some run wrote a checkpoint after ``started`` (the end of its first epoch)."""
    deadline = time.time() + COMMAND_TIMEOUT
    while proc.poll() is None and time.time() < deadline:
        if any(p.stat().st_mtime > started for p in (project / "output").glob("*/*/latest.pdstates")):
            proc.send_signal(signal.SIGINT)
            return
        time.sleep(0.2)


def serve_and_stop(proc, port: int) -> bool:
    """True when the server answered its /alive check within 60 s; it is stopped either way."""
    answered, deadline = False, time.time() + 60
    while not answered and proc.poll() is None and time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/alive", timeout=2) as r:
                answered = r.status == 204  # VisualDL's health check
        except OSError:
            time.sleep(0.5)
    # shell=True: the server is the shell's child; stop the whole session, not just the shell
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
        deadline = time.time() + 30
        while port_open(port) and time.time() < deadline:
            time.sleep(0.5)
    finally:
        if port_open(port) or proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return answered and not port_open(port)


def port_open(port: int) -> bool:
    """True while something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def run_one(cmd: str, comment: str, project, env) -> tuple[int | bool, str]:
    started = time.time()
    if cmd.startswith("visualdl "):
        port = free_port()
        cmd = re.sub(r"--port \d+", f"--port {port}", cmd)
        proc = subprocess.Popen(cmd, shell=True, cwd=project, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        return serve_and_stop(proc, port), cmd
    proc = subprocess.Popen(["bash", "-c", cmd], cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if "Ctrl-C" in comment:
        interrupt_after_checkpoint(proc, project, started)
    out, _ = proc.communicate(timeout=COMMAND_TIMEOUT)
    return proc.returncode, out


def test_readmes_list_the_same_commands():
    en = [c for c, _ in readme_commands("README.md")]
    zh = [c for c, _ in readme_commands("README_zh.md")]
    assert en == zh, [(a, b) for a, b in zip(en, zh) if a != b] or (len(en), len(zh))


def test_skip_list_matches_the_readme():
    commands = {c for c, _ in readme_commands("README.md")}
    assert set(SKIPPED) <= commands, sorted(set(SKIPPED) - commands)


def test_sample_digit_is_a_digits_image():
    """docs/digit.png is digits image 3 (a '3') scaled 4x with nearest neighbour."""
    from sklearn.datasets import load_digits
    img = np.asarray(Image.open(os.path.join(ROOT, "docs", "digit.png")))
    want = (load_digits().images[3] * (255 / 16)).round().astype(np.uint8)
    assert img.shape == (32, 32)
    assert np.array_equal(img[::4, ::4], want)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_readme_command_runs(tmp_path):
    project = tmp_path / "project"
    for d in COPIED_DIRS:
        shutil.copytree(os.path.join(ROOT, d), project / d, ignore=shutil.ignore_patterns("__pycache__", "vis"))
    for f in COPIED_FILES:
        shutil.copy(os.path.join(ROOT, f), project / f)
    make_inputs(project)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    done, failures, ran, skipped = set(), [], 0, set()
    last_run = None
    for cmd, comment in readme_commands("README.md"):
        if cmd in SKIPPED:
            skipped.add(cmd)
            continue
        key = (cmd, "Ctrl-C" in comment)
        if key in done:  # the README names a command again (e.g. `visualdl` in two sections)
            continue
        done.add(key)
        before = set(run_dirs(project))
        filled = fill(cmd, project, last_run)
        t0 = time.time()
        code, out = run_one(filled, comment, project, env)
        ran += 1
        want = True if cmd.startswith("visualdl ") else 130 if "Ctrl-C" in comment else 0
        print(f"{time.time() - t0:6.1f}s  exit {code}  {filled}")
        if code != want:
            failures.append(f"{filled}\n  exit {code}, want {want}\n{str(out)[-1500:]}")
        made = [p for p in run_dirs(project) if p not in before]
        if made:
            last_run = str(made[-1].relative_to(project))
    assert not failures, "\n\n".join(failures)
    assert skipped == set(SKIPPED)
    assert ran >= 40, ran
