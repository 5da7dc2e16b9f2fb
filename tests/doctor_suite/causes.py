"""The cause vocabulary of the suite, which finding ids name each cause, and the case record.

:data:`NAMES` is the one table to edit when the doctor learns a new finding: a cause is named
when the doctor's top finding id is in its set. Ids prefixed ``check:`` are pre-flight check ids
(utils/checks/), listed so a runner that also runs the checks can count them; ids the doctor does
not emit yet (``frozen_model``, ``softmax_before_loss``, ...) are the names a future finding would
take, so adding it needs no change here. An id counts only when its message or remedy points at
the cause itself, not at a neighbouring one (``bottleneck`` tells to lower the LR or grow the
model: it does not name a weight decay that is too strong).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

NAMES: dict[str, frozenset[str]] = {
    "lr_too_high": frozenset({"divergence", "nan_loss", "nan_layer", "nan_weights", "oscillation",
                              "exploding_gradients", "clipped_often", "both_rising", "lr_too_high"}),
    "lr_too_low": frozenset({"bottleneck", "lr_too_low"}),
    "lr_decayed_too_early": frozenset({"lr_decayed_too_early", "lr_schedule_too_short"}),
    "weight_decay_too_high": frozenset({"weight_decay_too_high"}),
    "label_smoothing_too_high": frozenset({"label_smoothing_too_high"}),
    "batchnorm_tiny_batch": frozenset({"batchnorm_tiny_batch", "batch_too_small"}),
    "dropout_too_high": frozenset({"dropout_too_strong"}),
    "too_little_data": frozenset({"overfitting"}),
    "unshuffled_data": frozenset({"unshuffled_batches", "acc_stuck"}),
    "grad_clip_too_tight": frozenset({"clipped_often", "grad_clip_too_tight"}),
    "init_too_large": frozenset({"exploding_activations", "exploding_gradients", "init_too_large",
                                 "check:loss_at_init"}),
    "init_too_small": frozenset({"vanishing_activations", "vanishing_gradients", "init_too_small"}),
    "saturating_activations": frozenset({"vanishing_gradients", "vanishing_activations"}),
    "frozen_model": frozenset({"frozen_model", "check:gradient_flow"}),
    "labels_wrong": frozenset({"acc_chance", "data_problem", "labels_wrong", "check:heldout_signal"}),
    "no_signal_inputs": frozenset({"acc_chance", "no_signal_inputs", "check:input_baseline"}),
    "nan_in_data": frozenset({"nan_input", "check:data_finite"}),
    "train_val_overlap": frozenset({"train_val_overlap", "check:train_val_duplicates"}),
    "unnormalized_inputs": frozenset({"unnormalized_inputs", "check:input_normalization"}),
    "preprocessing_mismatch": frozenset({"data_problem", "preprocessing_mismatch"}),
    "targets_not_normalized": frozenset({"targets_not_normalized"}),
    "softmax_before_loss": frozenset({"softmax_before_loss", "nan_loss_fn"}),
    "no_nonlinearity": frozenset({"no_nonlinearity"}),
    "relu_before_logits": frozenset({"relu_before_logits", "dead_relu"}),
    "dead_branch": frozenset({"dead_branch", "vanishing_gradients", "check:gradient_flow"}),
    "batchnorm_after_head": frozenset({"batchnorm_after_head"}),
    "too_few_epochs": frozenset({"still_learning"}),
}


@dataclass(frozen=True)
class Case:
    """One broken (or healthy) run: a shipped config, overrides, optional data/model builder, the cause.

    ``build(workdir)`` writes what the case needs (data, a registered model) and returns more
    overrides. ``slow``: more than ~5 s on one thread, run by the pytest file only with
    DOCTOR_SUITE_FULL=1.
    """
    id: str
    config: str
    overrides: tuple[str, ...] = ()
    cause: str | None = None          # None: a healthy run
    made: str = ""
    build: Callable[[str], list[str]] | None = None
    slow: bool = False
    extra: dict = field(default_factory=dict)


def names_cause(cause: str, finding_id: str | None) -> bool:
    """Whether ``finding_id`` names ``cause`` (per :data:`NAMES`)."""
    return finding_id is not None and finding_id in NAMES[cause]
