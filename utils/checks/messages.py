"""The words of the pre-flight checks: every user-facing sentence as a template, by language.

Kept apart from the checks so that a translation is one more table here (or set at run time)
and no check needs to change.
"""
from __future__ import annotations

# MESSAGES[lang][finding] = (evidence template, remedy template or None). Templates are
# str.format strings over the result's ``values``. Keys starting with "_" are the runner's
# own words. A new language adds a table with the same keys; missing keys fall back to "en".
MESSAGES = {"en": {
    "_remedy": "remedy",
    "_summary": "{n_pass} passed, {n_warn} warning(s), {n_fail} failed, {n_skip} skipped in {seconds:.1f} s",
    "_verdict_fail": "some checks FAILED: fix them before training (exit status 1)",
    "_verdict_ok": "no check failed",
    "_unknown_check": "unknown check '{name}'{hint}; valid checks: {names}; groups: {groups}",

    "skipped": ("skipped: {dep} failed, and this check needs it to pass", "Fix the {dep} failure first."),
    "check_error": ("the check itself raised {error}", "This usually means the data or model is broken in a way "
                    "the other checks name; if they all pass, the full traceback is in the --json report "
                    "(values.traceback); run the check alone with --only {check}."),
    "no_samples": ("no samples to check", "The split is empty: check Data.* and the data directory."),

    "finite_ok": ("no NaN/Inf in {n} samples after the transform pipeline ({splits})", None),
    "finite_bad": ("{n_nan} NaN and {n_inf} Inf values in {n_bad} of {n} samples after the transform pipeline "
                   "(e.g. {examples})",
                   "One non-finite input turns the loss and then every weight into NaN. Look at those samples "
                   "(dataset[i] and dataset.raw(i)): a corrupt image, a Normalize std of 0, or a custom "
                   "transform that divides by zero or takes log(0)."),

    "labels_ok": ("{n} labels ({splits}), all in [0, {num_classes})", None),
    "labels_bad": ("{n_bad} of {n} labels outside [0, {num_classes}): values {bad_values} (e.g. {examples})",
                   "Labels must be class indices 0..{last}. Check Data.num_classes and the label file; labels "
                   "counted from 1 need 1 subtracted; -1 or 255 are often 'ignore' markers that need removing."),

    "shapes_ok": ("all {n} samples are {shape} {dtype} after the transform pipeline", None),
    "shapes_bad": ("{k} different input shapes/types in {n} samples: {shapes} (e.g. {examples})",
                   "The model needs one input size and float32: start Transforms.train and Transforms.eval with "
                   "a Resize (or set Data.image_size) and make both pipelines end at the same size."),

    "balance_ok": ("{num_classes} classes, {n} training samples, per class min {cmin} ({name_min}) / max {cmax} "
                   "({name_max}), ratio {ratio:.2f}:1{hist}", None),
    "balance_warn": ("{num_classes} classes, {n} training samples, per class min {cmin} ({name_min}) / max {cmax} "
                     "({name_max}), ratio {ratio:.2f}:1, above {limit:g}:1{hist}",
                     "Imbalanced: accuracy will mostly reflect the large classes. Judge per-class accuracy "
                     "(tools/eval.py), and consider more data for the small classes, oversampling them, or a "
                     "class-weighted loss."),
    "balance_empty": ("{k} of {num_classes} classes have no training sample: {empty}{hist}",
                      "The model can never learn those classes. Fix the data, or keep only the present classes "
                      "with Data.classes (and check Data.num_classes)."),

    "dups_ok": ("no exact copy of any of {n_train} training images in {splits} (hash of the raw uint8 pixels)",
                None),
    "dups_found": ("{desc} are exact copies of training images (hash of the raw uint8 pixels); {n_conflict} of "
                   "them with a different label",
                   "Held-out accuracy is optimistic by up to that fraction (the model is scored on images it "
                   "trained on). Remove the copies from one side: dataset.path(i) names the files of the indices "
                   "above. Copies with a different label are labelling errors."),

    "dups_no_raw": ("the training set gives no raw images (no raw(i)): duplicates not checked", None),
    "norm_ok": ("raw training pixels mean {raw_mean} std {raw_std} (0-1 units); network inputs mean {in_mean} "
                "std {in_std} per channel", None),
    "norm_warn": ("raw training pixels mean {raw_mean} std {raw_std} (0-1 units); network inputs mean {in_mean} "
                  "std {in_std} per channel: not normalized (want |mean| <= {mean_max:g} and std in "
                  "[{std_lo:g}, {std_hi:g}])",
                  "End Transforms.train and Transforms.eval with '- Normalize: {{}}' (it uses Transforms.mean/std; "
                  "'auto' computes mean {raw_mean} std {raw_std} from the training split). Inputs far from mean 0 "
                  "and std 1 slow training and shift the learning rate that works."),

    "norm_stats": ("raw training pixels mean {raw_mean} std {raw_std} (0-1 units) but Normalize uses mean "
                   "{used_mean} std {used_std}: network inputs mean {in_mean} std {in_std} per channel, not "
                   "normalized (want |mean| <= {mean_max:g} and std in [{std_lo:g}, {std_hi:g}])",
                   "The Normalize statistics are not this data's: set Transforms.mean: auto and Transforms.std: "
                   "auto (or the raw values above). Padding of RandomCrop adds zeros and moves the mean a little; "
                   "that alone does not trigger this."),
    "init_ok": ("loss {loss:.3f} vs ln({num_classes})={lnc:.3f} (ratio {ratio:.2f}) on {n} samples, BatchNorm on "
                "batch statistics, dropout off; logit std {logit_std:.2f}", None),
    "init_warm": ("loss {loss:.3f} vs ln({num_classes})={lnc:.3f} (ratio {ratio:.2f}, above {hi:g}) on {n} samples, "
                  "BatchNorm on batch statistics, dropout off; logit std {logit_std:.2f}",
                  "The untrained model is somewhat confident (logit std should be about 1 or less): training copes "
                  "but spends its first steps shrinking the logits. Common in residual networks; a smaller init "
                  "of the head (Arch.init, Arch.init_std) or zero-initialized last BatchNorm scale of each "
                  "residual block brings it to ln(C)."),
    "init_high": ("loss {loss:.3f} vs ln({num_classes})={lnc:.3f} (ratio {ratio:.2f}, above {hi:g}) on {n} samples, "
                  "BatchNorm on batch statistics, dropout off; logit std {logit_std:.2f}",
                  "The untrained model is confidently wrong: its logits are far too large at init (logit std "
                  "should be about 1 or less). Look for a bad init (Arch.init: kaiming or xavier, a smaller "
                  "Arch.init_std), logits scaled up (a temperature, a missing normalization before the head), or "
                  "a loss that is not cross-entropy on logits."),
    "init_low": ("loss {loss:.3f} vs ln({num_classes})={lnc:.3f} (ratio {ratio:.2f}, below {lo:g}) on {n} samples, "
                 "BatchNorm on batch statistics, dropout off; logit std {logit_std:.2f}",
                 "An untrained model should not beat chance: labels leak into the inputs, weights are not fresh, "
                 "or the loss is not a mean cross-entropy (e.g. divided by the class count)."),
    "init_probs": ("the model outputs probabilities, not logits (every row >= 0 and sums to 1, max deviation "
                   "{dev:.1e}); loss {loss:.3f} vs ln({num_classes})={lnc:.3f}",
                   "Softmax is applied twice: return raw logits from forward(), the cross-entropy loss applies "
                   "softmax itself. With a doubled softmax the loss starts at ln(C) but can never go below "
                   "{floor:.2f}, so training stalls."),
    "init_nonfinite": ("loss at init is {loss} (logits: {n_bad} non-finite values)",
                       "The forward pass produces NaN/Inf before any training: check the inputs (data_finite), "
                       "log/sqrt/division of values that can be 0 or negative in forward(), and the init."),

    "grads_ok": ("{n} trainable parameter tensors ({n_values} values), all with finite non-zero gradients on a "
                 "batch of {batch}; smallest gradient norm {gmin:.1e} ({gmin_name}), largest {gmax:.1e} "
                 "({gmax_name})", None),
    "grads_frozen": ("{n_frozen} frozen (stop_gradient) parameter tensor(s) never update: {frozen}; the {n} "
                     "trainable ones all get finite non-zero gradients",
                     "Intended when fine-tuning part of a model; otherwise set stop_gradient = False (or "
                     "ParamAttr(trainable=True)) on them."),
    "grads_bad": ("{n_bad} of {n} trainable parameter tensors get no usable gradient on a batch of {batch}: "
                  "dead (zero or none): {dead}; non-finite: {nonfinite}; frozen: {frozen}",
                  "Those weights never learn. A missing gradient means the layer is built but not used in "
                  "forward(); an all-zero one means its output is multiplied by zero, cut off by detach() or "
                  "stop_gradient, or behind a ReLU that is dead for every input; NaN/Inf means an overflow or "
                  "log/sqrt/division of 0 in forward(). Look at forward() for each name."),

    "indep_ok": ("eval mode, batch of {batch}: max |d loss_i / d x_j| for j != i is {cross:.1e} vs {self_grad:.1e} "
                 "for j = i", None),
    "indep_mixed": ("eval mode, batch of {batch}: max |d loss_i / d x_j| for j != i is {cross:.1e} vs "
                    "{self_grad:.1e} for j = i (ratio {ratio:.1e} > {tol:g}): samples influence each other "
                    "(pairs i<-j: {pairs})",
                    "The model mixes samples across the batch outside of BatchNorm's training statistics: a "
                    "reshape or transpose that moves the batch axis (e.g. x.reshape([C, -1]) or "
                    "transpose([1, 0, ...]) before a flatten), a mean/norm/softmax over axis 0, or a matmul with "
                    "the batch on the wrong side. Print the shapes through forward()."),
    "indep_no_input": ("eval mode, batch of {batch}: the loss does not depend on the inputs (gradient "
                       "w.r.t. every input is zero)",
                       "forward() ignores its input: check that it uses x (and not a constant, a stored tensor "
                       "or a detached copy)."),

    "overfit_ok": ("{n} samples ({batches} batches of {bs}, eval transform, weight decay 0{dropout}): loss "
                   "{loss0:.2f} -> {loss:.3f} and accuracy {acc:.0%} after {steps} steps (Adam lr {lr:g}, "
                   "eval mode)", None),
    "overfit_slow": ("{n} samples ({batches} batches of {bs}, eval transform, weight decay 0{dropout}): accuracy "
                     "{acc:.0%} but loss {loss0:.2f} -> {loss:.3f} (want < {target:g}) after {steps} steps "
                     "(Adam lr {lr:g}, eval mode)",
                     "The pipeline learns, but slowly for so few samples: strong dropout or stochastic depth, a "
                     "very small or very deep model without normalization, or an init that saturates "
                     "activations."),
    "overfit_fail": ("{n} samples ({batches} batches of {bs}, eval transform, weight decay 0{dropout}): loss "
                     "{loss0:.2f} -> {loss:.3f}, accuracy {acc:.0%} after {steps} steps (Adam lr {lr:g}, eval "
                     "mode): the training pipeline is broken",
                     "A working network memorizes a few dozen samples within these steps, the loss close to 0. "
                     "Look, in order, at: labels aligned with their images (print a few dataset.raw(i)); the "
                     "model returns raw logits (no softmax in forward); the loss_at_init, gradient_flow and "
                     "batch_independence results; forward() uses its input; frozen layers; dropout set too "
                     "high; a loss that cannot reach 0."),
    "overfit_nonfinite": ("the training loss became {loss} at step {step} while fitting {n} samples (Adam lr "
                          "{lr:g})",
                          "Training blows up even on a tiny subset at a small learning rate: look for log(0), "
                          "division by ~0 or exp overflow in forward() or a custom loss, and for NaN inputs."),

    "baseline_ok": ("after {steps} steps on the same {n} samples: loss {real:.3f} with the real inputs vs {zero:.3f} "
                    "with zeroed inputs (label entropy {entropy:.2f}); ratio {ratio:.2f} <= {limit:g}", None),
    "baseline_fail": ("after {steps} steps on the same {n} samples: loss {real:.3f} with the real inputs vs "
                      "{zero:.3f} with zeroed inputs (label entropy {entropy:.2f}); ratio {ratio:.2f} > {limit:g}: "
                      "the model gets nothing out of its inputs",
                      "Training on the real images should beat training on blank ones by far. Check that "
                      "forward() uses x, that the inputs reaching the model are not constant (data_finite, "
                      "input_normalization: std ~0 means blank images), and that nothing overwrites or detaches "
                      "the input."),

    "heldout_ok": ("trained {steps} steps on {n_train} samples; on {n_val} held-out samples: accuracy {acc:.1%} vs "
                   "{base:.1%} for the best input-independent guess (need >= {need:.1%}), loss {loss:.3f} vs "
                   "{base_loss:.3f} (need <= {loss_need:.3f})", None),
    "heldout_fail": ("trained {steps} steps on {n_train} samples; on {n_val} held-out samples: accuracy {acc:.1%} vs "
                     "{base:.1%} for the best input-independent guess (need >= {need:.1%}), loss {loss:.3f} vs "
                     "{base_loss:.3f} (need <= {loss_need:.3f}): what the model learns does not carry over to new "
                     "images",
                     "The model fits its training samples but not the relation between images and labels. "
                     "Typical cause: labels that do not match their images (shuffled or misaligned lists, a "
                     "label file in another order, images sorted without their labels), or a held-out split "
                     "labelled differently from train. Look at a few samples of each split with their labels."),
    "heldout_no_val": ("no held-out samples (no val split and no training sample left over)",
                       "Give the data a validation split (Data.val_split > 0)."),
}}


def message(finding: str, lang: str = "en") -> tuple[str, str | None] | str:
    """The (evidence, remedy) templates of ``finding`` in ``lang`` (falling back to English)."""
    table = MESSAGES.get(lang, {})
    return table.get(finding, MESSAGES["en"][finding])
