"""The doctor's yardstick in pytest: every case trains without crashing, the healthy runs end with no
WARN/ERROR, and the doctor's top finding names each broken run's cause (tests/doctor_suite/).

The cases the current doctor gets wrong are strict xfails that say what it answers instead: a fix
turns one into XPASS, a failure, so the lists below must be updated with it. Cases marked slow
(conv families, > ~5 s each) run only with DOCTOR_SUITE_FULL=1; the rest take ~45 s of CPU on one
thread (~150 s wall on a busy 2-core machine); with DOCTOR_SUITE_FULL=1 add ~5 minutes.
"""
from __future__ import annotations

import os

import pytest

from tests.doctor_suite.causes import NAMES
from tests.doctor_suite.run import case_sets, run_case

FULL = os.environ.get("DOCTOR_SUITE_FULL") == "1"
SETS = case_sets()

# case id -> what the doctor's top finding says instead of the cause
MISSES = {
    # dev
    "lr_5_cnn": "acc_stuck (warn)",
    "lr_1e-6_mlp": "below_chance (warn); bottleneck comes later",
    "wd_1_mlp": "bottleneck (warn): lower the LR or grow the model",
    "lr_step_decay_epoch1": "bottleneck (warn)",
    "label_smoothing_0.9": "bottleneck (warn)",
    "bn_batch2_resnet": "oscillation (warn)",
    "fraction_3pct": "bottleneck (warn)",
    "grad_clip_1e-4": "below_chance (warn); clipped_often comes later",
    "freeze_all_but_bias": "below_chance (warn)",
    "constant_images": "acc_stuck (warn)",
    "softmax_head": "bottleneck (warn)",
    "all_linear": "overfitting (info)",
    "relu_on_logits": "still_learning (info)",
    "gmlp_lr_0.5": "acc_chance (warn)",
    # held-out
    "class3_labelled_5": "overfitting (info)",
    "val_copied_from_train": "still_learning (info)",
    "pixels_0_255": "still_learning (info)",
    "train_without_normalize": "overfitting (info)",
    "bn_after_head": "still_learning (info)",
    "deep_sigmoid": "acc_stuck (warn); vanishing_gradients comes later",
    "googlenet_lr_3": "acc_chance (warn)",
    "resnet_wd_0.5": "acc_stuck (warn)",
    "mlp_init_1e-4_deep": "acc_stuck (warn); vanishing_activations comes later",
    "csv_targets_shuffled": "bottleneck (warn)",
    "cnn_lr_1e-5": "acc_chance (warn); bottleneck comes later",
    "cnn_sa_one_epoch": "no finding at all",
}
# healthy case id -> the WARN/ERROR it ends with
FALSE_ALARMS = {
}

_results: dict[str, object] = {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("doctor_suite"))


def result(case, workdir):
    """Train ``case`` once per session; the tests below share the result."""
    if case.id not in _results:
        _results[case.id] = run_case(case, os.path.join(workdir, case.id))
    return _results[case.id]


def params(set_names, xfails, what):
    out = []
    for s in set_names:
        for case in SETS[s]:
            marks = []
            if case.slow and not FULL:
                marks.append(pytest.mark.skip(reason="slow case: DOCTOR_SUITE_FULL=1"))
            if xfails is not None and case.id in xfails:
                marks.append(pytest.mark.xfail(strict=True, reason=f"{what}: {xfails[case.id]}"))
            out.append(pytest.param(case, id=f"{s}-{case.id}", marks=marks))
    return out


def test_every_cause_is_in_the_table():
    for s in ("dev", "heldout"):
        assert {c.cause for c in SETS[s]} <= set(NAMES)
    ids = [c.id for cases in SETS.values() for c in cases]
    assert len(ids) == len(set(ids))
    assert len(SETS["dev"]) + len(SETS["heldout"]) >= 30 and len(SETS["healthy"]) >= 8


@pytest.mark.parametrize("case", params(("dev", "heldout", "healthy"), None, ""))
def test_case_does_not_crash(case, workdir):
    r = result(case, workdir)
    assert r.crash is None, f"{case.id} crashed: {r.crash}"
    assert r.findings is not None


@pytest.mark.parametrize("case", params(("healthy",), FALSE_ALARMS, "false alarm"))
def test_healthy_run_has_no_alarm(case, workdir):
    r = result(case, workdir)
    assert r.crash is None
    assert r.alarms == [], f"{case.id}: {r.alarms}"


@pytest.mark.parametrize("case", params(("dev", "heldout"), MISSES, "doctor misses"))
def test_top_finding_names_the_cause(case, workdir):
    r = result(case, workdir)
    assert r.crash is None
    assert r.top_id in NAMES[case.cause], f"{case.id}: expected {case.cause}, top finding {r.top_id}"


def test_cases_leave_the_registries_as_shipped(workdir):
    from models import list_models
    from utils.data import list_datasets

    before = (list_models(), list_datasets())
    for case in SETS["dev"] + SETS["heldout"]:
        if case.build is not None and not case.slow:
            result(case, workdir)
    assert (list_models(), list_datasets()) == before
    assert not [m for m in list_models() if m.startswith("user_")] and "diabetes_csv" not in list_datasets()
