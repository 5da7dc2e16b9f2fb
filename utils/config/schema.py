"""The config schema: every section and key with its type, default, meaning and allowed values.

``configs/README.md`` is generated from :data:`SCHEMA` (``python tools/config_doc.py``) and a test
keeps the two in sync. The values of ``Data.name`` and ``LRScheduler.name`` are read from their
registries when checked (:class:`RegistryNames`), so a registered dataset or schedule is valid
without an edit here.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Iterator

import yaml

from utils.config.ranges import (
    BATCH_MAX,
    CLASS_COUNT,
    EPOCHS_MAX,
    IMAGE_SIZE_MAX,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    SAMPLE_IMAGES_MAX,
    SEED_MAX,
    SPLIT_SEED_MAX,
    THREADS_MAX,
    WORKERS_MAX,
    Bounds,
    at_least,
    check_number,
)
from utils.data import list_datasets
from utils.errors import ConfigError, did_you_mean
from utils.schedules import list_schedules


class Key:
    """One config entry: accepted types, default, help text and allowed values.

    ``bounds``: the range of a number (:mod:`utils.config.ranges`); ``items``: for a list, the
    (types, bounds) of its elements. Numbers are always finite and int64 as well.
    """

    def __init__(self, types: type | tuple[type, ...], default: Any, help: str, choices: Iterable | None = None,
                 nullable: bool = False, bounds: Bounds | None = None,
                 items: tuple[tuple[type, ...], Bounds | None] | None = None) -> None:
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default
        self.help = help
        self.choices = choices
        self.nullable = nullable or default is None
        self.bounds = bounds
        self.items = items

    def type_name(self) -> str:
        """The accepted types as the reference and the error messages write them (``float or null``)."""
        names = {int: "int", float: "float", str: "str", bool: "bool", list: "list", dict: "mapping"}
        s = " or ".join(names.get(t, t.__name__) for t in self.types)
        return s + (" or null" if self.nullable else "")

    def check(self, value: Any, where: str) -> Any:
        """``value`` checked against the types and choices (an int where a float is asked becomes a float).

        Raises:
            ConfigError: naming ``where`` (``file:line: Section.key``), the expected type or the choices.
        """
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(f"{where}: null is not allowed, expected {self.type_name()}")
        # YAML gives 1 for "1" and 1e-3 for "1.0e-3"; accept int where float is asked.
        if isinstance(value, bool) and bool not in self.types:
            ok = False
        elif isinstance(value, int) and float in self.types and int not in self.types:
            value, ok = float(value), True
        elif isinstance(value, str) and float in self.types and str not in self.types:
            # PyYAML reads '1e-3' (no dot) as a string: accept it as the float it means.
            try:
                value, ok = float(value), True
            except ValueError:
                ok = False
        else:
            ok = isinstance(value, self.types)
        if not ok:
            raise ConfigError(
                f"{where}: expected {self.type_name()}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(
                f"{where}: {value!r} is not one of {list(self.choices)}{did_you_mean(value, self.choices)}")
        if isinstance(value, list) and self.items is not None:
            types, bounds = self.items
            for i, x in enumerate(value):
                if (isinstance(x, bool) and bool not in types) or not isinstance(x, types):
                    names = " or ".join("number" if t is float else t.__name__ for t in types)
                    raise ConfigError(f"{where}[{i}]: expected {names}, got {type(x).__name__} {x!r}")
                check_number(x, f"{where}[{i}]", bounds)
        else:
            check_number(value, where, self.bounds)
        return value

    def range_text(self) -> str:
        """The allowed range as the reference writes it (``, in [0, 1)``), or ''."""
        if self.bounds is not None:
            return f", {self.bounds.text()}"
        if self.items is not None and self.items[1] is not None:
            return f", items {self.items[1].text()}"
        return ""


OPTIMIZERS = ("SGD", "Momentum", "Adam", "AdamW", "RMSProp", "Adadelta")


class RegistryNames:
    """The names of a registry, read when asked: a schedule or dataset registered after this module
    was imported (by a user's own module) is a valid choice too."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self.names = names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, value: object) -> bool:
        return value in self.names()

    def __len__(self) -> int:
        return len(self.names())


SCHEDULES = RegistryNames(list_schedules)  # utils/schedules.py: one registered function per schedule
DATASETS = RegistryNames(list_datasets)  # utils/data/sources/: one registered function per dataset
# Global.task: what each dataset is for, which losses each task takes, the metrics its evaluation reports.
REGRESSION_DATASETS = RegistryNames(lambda: list_datasets("regression"))
TASK_LOSSES = {"classification": ("CrossEntropy",), "regression": ("mse", "smooth_l1")}
REGRESSION_METRICS = ("loss", "mae", "rmse")
TTA_MODES = ("none", "flip", "flip_translate")  # Eval.tta; utils/training/evaluate.py tta_views

SCHEMA = {
    "Global": {
        "output_dir": Key(str, "output", "Root of run directories: runs go to <output_dir>/<config name>/<timestamp>/."),
        "run_name": Key(str, None, "Run directory name instead of the timestamp."),
        "epochs": Key(int, 30, "Number of training epochs.", bounds=at_least(1, EPOCHS_MAX)),
        "seed": Key(int, 42, "Seed for Python, NumPy and Paddle; each epoch reseeds with seed + epoch so a resumed run repeats the same shuffles and augmentations.", bounds=at_least(0, SEED_MAX)),
        "device": Key(str, "auto", "auto (GPU when Paddle was built with CUDA and one is visible), cpu or gpu.", choices=("auto", "cpu", "gpu")),
        "num_threads": Key(int, 0, "CPU threads for Paddle's kernels; 0 = all cores (Paddle itself defaults to 1).", bounds=at_least(0, THREADS_MAX)),
        "eval_every_epochs": Key(int, 1, "Validate every N epochs (and always after the last one); 0 = only after the last.", bounds=at_least(0, EPOCHS_MAX)),
        "eval_every_iters": Key(int, 0, "Also validate every N training iterations (0 = off): faster feedback on long epochs.", bounds=NON_NEGATIVE),
        "log_every_iters": Key(int, 20, "Console and VisualDL logging period in iterations.", bounds=at_least(1)),
        "checkpoints": Key(str, None, "Resume from this run directory or checkpoint prefix (PaddleClas style); same as --resume."),
        "pretrained_model": Key(str, None, "Load matching weights from this .pdparams file (or prefix) before training."),
        "print_flops": Key(bool, True, "Print parameter count and FLOPs at start."),
        "verbose": Key(int, 1, "0 = quiet, 1 = one line per epoch and log period, 2 = also the model summary.", bounds=at_least(0, 2)),
        "task": Key(str, "classification", "classification (class labels, cross-entropy, accuracy) or regression (one real-valued target: Loss.name mse or smooth_l1, metrics loss/mae/rmse in target units, EarlyStopping on mae by default; Data.name diabetes).", choices=("classification", "regression")),
    },
    "Arch": {
        "name": Key(str, "gmlp_tiny", "Registered model name (python -c 'import models; print(models.list_models())')."),
        "init": Key(str, "default", "Weight init of conv and linear layers: default (Paddle's), xavier, kaiming or normal. Layers with a special init (the SGU gate) keep theirs.", choices=("default", "xavier", "kaiming", "normal")),
        "init_std": Key(float, 0.02, "Standard deviation for init: normal.", bounds=POSITIVE),
    },
    "Data": {
        "name": Key(str, "digits", "digits (scikit-learn, embedded), cifar10, cifar100, folder (class-folder tree) or filelist (PaddleClas/PaddleX lists).", choices=DATASETS),
        "data_dir": Key(str, None, "cifar: the python tar.gz file; folder: root holding train/ (and val/) class folders or the class folders themselves; filelist: the dataset root the lists are relative to."),
        "download": Key(bool, False, "cifar: when the archive is missing, download it (Paddle's mirror, progress bar, md5 checked) into Paddle's cache and copy it to data_dir; the CIFAR configs set true (as paddle.vision.datasets.Cifar10 does), false forbids it. Offline, the error names the file to place by hand and the image-folder route."),
        "train_list": Key(str, "train_list.txt", "filelist: training list, lines 'relative/path.jpg label', relative to data_dir."),
        "val_list": Key(str, "val_list.txt", "filelist: validation list; a missing file means carve val from train."),
        "label_file": Key(str, "labels.txt", "filelist: class names, one per line ('name' or 'id name'); optional."),
        "num_classes": Key(int, None, "Number of classes; null = from the data. A value that disagrees with the data is an error.", bounds=CLASS_COUNT),
        "image_size": Key(int, None, "Side length the images are resized to (a Resize is prepended to Transforms.train and .eval unless the list has one); null = native size (32 for CIFAR, 8 for digits).", bounds=at_least(1, IMAGE_SIZE_MAX)),
        "val_split": Key(float, 0.1, "Fraction of train carved out as validation (fixed seed) when the dataset has no val set.", bounds=PROBABILITY),
        "split_seed": Key(int, 0, "Seed of the train/val split and of the fraction subsample.", bounds=at_least(0, SPLIT_SEED_MAX)),
        "classes": Key(list, None, "Keep only these classes (names or indices) and relabel them 0..k-1: simplify the problem to iterate fast.", items=((int, str), None)),
        "fraction": Key(float, 1.0, "Keep this fraction of the training samples (stratified, after the val carve); validation is untouched (see val_fraction).", bounds=Bounds(0, 1, lo_open=True)),
        "val_fraction": Key(float, 1.0, "Keep this fraction of the validation split, carved or given (stratified, at least one sample per class, seed split_seed + 2): quick runs without 5,000 CIFAR validation images; 1 = all.", bounds=Bounds(0, 1, lo_open=True)),
        "preload": Key((bool, str), "auto", "folder/filelist: decode all images into memory once (true), at every access (false), or auto (preload when the decoded images take < 1 GB).", choices=("auto", True, False)),
        "normalize_target": Key(bool, True, "regression: train on (target - target_mean) / target_std; predictions are mapped back, so MAE/RMSE are always in target units. Off, large targets (diabetes: 25..346) make the MSE start near mean(target^2) and explode or stall."),
        "target_mean": Key(float, None, "regression: target mean for normalize_target; null = computed on the training split (written into the run's config.yml, which eval and export read)."),
        "target_std": Key(float, None, "regression: target std for normalize_target; null = computed on the training split.", bounds=POSITIVE),
    },
    "DataLoader": {
        "batch_size": Key(int, 128, "Training batch size.", bounds=at_least(1, BATCH_MAX)),
        "eval_batch_size": Key(int, 256, "Validation batch size.", bounds=at_least(1, BATCH_MAX)),
        "num_workers": Key(int, 0, "Loader worker processes (0 = main process).", bounds=at_least(0, WORKERS_MAX)),
        "shuffle": Key(bool, True, "Shuffle training samples every epoch."),
        "drop_last": Key(bool, False, "Drop the last incomplete training batch."),
        "use_shared_memory": Key(bool, True, "Share batches through /dev/shm; set false where /dev/shm is small (bus errors)."),
        "batched": Key(bool, False, "Image datasets of one size: hold each split in memory as one uint8 array and augment whole batches with numpy instead of image by image (num_workers, use_shared_memory and Data.preload are not read). Transforms.train may use RandomCrop, RandomHorizontalFlip (also mode: alternate), RandomVerticalFlip, Cutout, RandomErasing, CenterCrop, Resize to the images' own size and Normalize; Transforms.eval the non-random ones. folder data is decoded once and cached in data_dir/.cache/. One process only (no data parallel)."),
    },
    "Transforms": {
        "train": Key(list, [{"Normalize": {}}], "Training transform ops, in order: a list of {OpName: {params}} (see the transform table)."),
        "eval": Key(list, [{"Normalize": {}}], "Validation/test transform ops."),
        "mean": Key((list, str), None, "Per-channel mean in [0,1] units for Normalize; 'auto' computes it from the training data; null = dataset default."),
        "std": Key((list, str), None, "Per-channel std for Normalize; 'auto' computes it; null = dataset default."),
    },
    "Loss": {
        "name": Key(str, "CrossEntropy", "Loss function: CrossEntropy (classification), mse or smooth_l1 (regression; Huber with delta 1 in normalized target units). With Global.task: regression the default is mse.", choices=("CrossEntropy", "mse", "smooth_l1")),
        "label_smoothing": Key(float, 0.0, "Label smoothing epsilon (0 = off).", bounds=PROBABILITY),
    },
    "Metric": {
        "topk": Key(list, [1, 5], "Top-k accuracies to report; k larger than num_classes is dropped.", items=((int,), CLASS_COUNT)),
    },
    # Test-time augmentation (utils/training/evaluate.py predict). Cost: resnet20, 1,024 random 32x32 images in
    # batches of 256, 1 thread: none 3.0 s, flip 5.6 s (1.9x), flip_translate 17.7 s (5.9x).
    "Eval": {
        "tta": Key(str, "none", "Test-time augmentation of every evaluation (training's periodic one and tools/eval.py, where --tta overrides it), on the normalized images; logits are averaged (not probabilities), so the loss stays comparable, and the monitored metric, best_model and early stopping follow them. none; flip = mean of the image and its horizontal mirror (2 forward passes); flip_translate = 0.5 x that flip mean + 0.25 x the flip mean of each diagonal 1-pixel shift (crops at offsets -1,-1 and +1,+1 of a 1-pixel reflect-padded copy) (6 passes, the usual CIFAR fast-training TTA). Labels are never changed. Images only: regression and tabular inputs (N x F x 1 x 1) take none.", choices=TTA_MODES),
    },
    "Optimizer": {
        "name": Key(str, "Momentum", "Optimizer.", choices=OPTIMIZERS),
        "lr": Key(float, 0.1, "Base learning rate (the peak for onecycle).", bounds=NON_NEGATIVE),
        "momentum": Key(float, 0.9, "Momentum (Momentum, RMSProp).", bounds=PROBABILITY),
        "nesterov": Key(bool, False, "Nesterov momentum (Momentum)."),
        "beta1": Key(float, 0.9, "Adam/AdamW beta1.", bounds=PROBABILITY),
        "beta2": Key(float, 0.999, "Adam/AdamW beta2.", bounds=PROBABILITY),
        "epsilon": Key(float, 1e-8, "Adam/AdamW/RMSProp/Adadelta epsilon.", bounds=POSITIVE),
        "rho": Key(float, 0.95, "RMSProp/Adadelta decay of the squared-gradient average.", bounds=PROBABILITY),
        "weight_decay": Key(float, 0.0, "Weight decay coefficient; AdamW applies it decoupled, the others as a regularizer.", bounds=NON_NEGATIVE),
        "regularizer": Key(str, "L2", "L2 or L1 penalty for weight_decay (not AdamW).", choices=("L1", "L2")),
        "grad_clip": Key(str, None, "Gradient clipping: value, norm (per tensor) or global_norm; null = off.", choices=("value", "norm", "global_norm")),
        "clip_value": Key(float, 1.0, "Threshold for grad_clip (max |g| for value, max norm otherwise).", bounds=POSITIVE),
        "param_groups": Key(list, [], "Per-parameter multipliers: a list of {params: PATTERN or [PATTERNS], lr_mult: M, weight_decay_mult: W} (patterns as in FineTune.freeze, over named_parameters() names, e.g. '*norm*.bias'); the first group that matches a parameter decides, unmatched ones keep 1. lr_mult multiplies the LR; weight_decay_mult multiplies the weight_decay coefficient (AdamW: 0 or 1). A group matching nothing is an error."),
    },
    "LRScheduler": {
        "name": Key(str, "cosine", "Schedule.", choices=SCHEDULES),
        "step_size": Key(float, 30, "step: epochs between decays.", bounds=NON_NEGATIVE),
        "milestones": Key(list, [30, 60, 90], "multistep: epochs at which the LR is multiplied by gamma.", items=((int, float), NON_NEGATIVE)),
        "gamma": Key(float, 0.1, "step/multistep/exponential/inverse_time: decay factor (exponential: per epoch).", bounds=NON_NEGATIVE),
        "eta_min": Key(float, 0.0, "cosine: final LR.", bounds=NON_NEGATIVE),
        "end_lr": Key(float, 0.0, "polynomial/onecycle: final LR.", bounds=NON_NEGATIVE),
        "power": Key(float, 1.0, "polynomial: power (1 = linear).", bounds=NON_NEGATIVE),
        "pct_start": Key(float, 0.3, "onecycle: fraction of training spent rising to Optimizer.lr.", bounds=at_least(0.0, 1.0)),
        "div_factor": Key(float, 25.0, "onecycle: start LR = lr / div_factor.", bounds=NON_NEGATIVE),
        "anneal_strategy": Key(str, "cos", "onecycle: shape of the rise and the fall, cos or linear (Paddle's OneCycleLR name; linear = the triangle of the fast CIFAR recipes).", choices=("cos", "linear")),
        "factor": Key(float, 0.1, "plateau: LR multiplier on a plateau.", bounds=at_least(0.0, 1.0)),
        "patience": Key(int, 5, "plateau: evaluations without improvement before reducing.", bounds=NON_NEGATIVE),
        "threshold": Key(float, 1e-4, "plateau: minimal relative improvement.", bounds=NON_NEGATIVE),
        "cooldown": Key(int, 0, "plateau: evaluations to wait after a reduction.", bounds=NON_NEGATIVE),
        "min_lr": Key(float, 0.0, "plateau: lower bound of the LR.", bounds=NON_NEGATIVE),
        "monitor": Key(str, "loss", "plateau: validation metric watched (loss, acc, acc_top5)."),
        "mode": Key(str, "min", "plateau: min or max.", choices=("min", "max")),
        "warmup_epochs": Key(float, 0.0, "Linear warmup length in epochs (fractions allowed), for every schedule; the main schedule (step_size, milestones, cosine length) starts after the warmup, as in PaddleClas.", bounds=at_least(0.0, float(EPOCHS_MAX))),
        "warmup_start_lr": Key(float, 0.0, "LR at the first warmup step.", bounds=NON_NEGATIVE),
    },
    "EarlyStopping": {
        "enable": Key(bool, True, "Stop when the monitored validation metric stops improving."),
        "monitor": Key(str, "acc", "Validation metric: acc, loss or acc_top5; regression: mae (its default there), rmse or loss."),
        "mode": Key(str, "max", "max (accuracy) or min (loss); explicit, never guessed. Regression: min unless set.", choices=("min", "max")),
        "patience": Key(int, 10, "Evaluations without improvement before stopping.", bounds=NON_NEGATIVE),
        "min_delta": Key(float, 0.0, "An improvement must beat the best so far by more than this.", bounds=NON_NEGATIVE),
        "restore_best": Key(bool, True, "At the end, load the best weights back into the model (they are also saved as best)."),
    },
    "Checkpoint": {
        "save_best": Key(bool, True, "Keep best_model.* (weights, optimizer and state at the best monitored metric)."),
        "save_last": Key(bool, True, "Keep latest.* after every epoch (what --resume continues from)."),
        "save_every_epochs": Key(int, 0, "Also keep epoch_N.* every N epochs (0 = off).", bounds=at_least(0, EPOCHS_MAX)),
        # 10 minutes: a CIFAR epoch on 2 CPU cores takes 5-15; a save of a 1M-parameter model ~50 ms.
        "save_every_minutes": Key(float, 10.0, "Also write latest.* inside an epoch when this many minutes passed since the last checkpoint (0 = off); --resume then continues from that step exactly.", bounds=at_least(0.0, 10.0 ** 6)),
    },
    "VisualDL": {
        # The defaults cost 1-2% of training time on digits, the worst case (epochs of 1.5-2.6 s): CPU time inside the
        # logger / fit CPU time 1.0% (cnn_digits) and 2.0% (gmlp_digits), 5 epochs, median of 5, with
        # `OMP_NUM_THREADS=1 python bench/bench_vdl.py`; histograms ~18 ms and the prediction image ~10 ms per
        # epoch. Wall time vs VisualDL off: ratio 0.73-0.94, i.e. within the shared machine's noise. Tags: utils/training/vdl.py.
        "enable": Key(bool, True, "Write a VisualDL log into the run directory (train/eval scalars on one step axis); the keys below add to it."),
        "histograms_every_epochs": Key(int, 1, "Weight and gradient histograms of every parameter (weights/<name>, grads/<name>; gradients of a real training step, before clipping and weight decay) on the last step of every N-th epoch and of the last epoch; 0 = off.", bounds=at_least(0, EPOCHS_MAX)),
        "sample_images": Key(int, 16, "At each evaluation, an image (eval/predictions) of N fixed validation samples (classes in turn) with the predicted class and confidence, framed green when right and red when wrong; 0 = off.", bounds=at_least(0, SAMPLE_IMAGES_MAX)),
        "confidence_histogram": Key(bool, True, "At each evaluation, histograms of the max softmax probability over the validation set (eval/confidence, eval/confidence_correct, eval/confidence_wrong)."),
        "pr_curves": Key(bool, True, "At each evaluation, a one-vs-rest precision-recall curve per class (pr_curve/<class>)."),
        "hparams": Key(bool, True, "At the end of training, the run's key settings (model, optimizer, lr, batch size, weight decay, epochs, schedule, ...) with final and best validation metrics (hparam/final_*, hparam/best_*) for VisualDL's HParams view."),
    },
    "Doctor": {
        "enable": Key(bool, True, "Training doctor: watch the run, stop at once on a non-finite loss, input or gradient and name its source, report findings (console, diagnosis.json, VisualDL text)."),
        "lang": Key(str, "en", "Language of the findings: en or zh.", choices=("en", "zh")),
        "sample_every": Key(int, 50, "Per-layer activation and gradient statistics every N steps (and at the first and last step).", bounds=at_least(1)),
        "grad_every": Key(int, 10, "Global gradient norm and clipping statistics every N steps.", bounds=at_least(1)),
    },
    # Fine-tuning (utils/addons/finetune.py). Patterns name parameters as model.named_parameters() does
    # (layer1.0.conv1.weight, fc.bias); BatchNorm running statistics are not parameters here.
    "FineTune": {
        "freeze": Key(list, [], "Parameter-name patterns frozen for the whole run (stop_gradient: no update, no weight decay). A name without wildcards is that parameter or the whole layer (layer1 = layer1.*); with * ? [ ] it is an fnmatch glob over the full name (* crosses dots); re:REGEX is a regular expression searched in the name. A pattern matching no parameter is an error listing the names.", nullable=True, items=((str,), None)),
        "freeze_bn": Key(bool, True, "BatchNorm layers whose weight and bias are all frozen normalise with their running mean/var and stop updating them (as timm and PaddleClas freeze BN), so frozen layers stay bit-identical; false = they keep batch statistics and update the running ones in train mode."),
        "lr_mult": Key(dict, {}, "{pattern: multiplier}: per-parameter learning-rate multipliers (Paddle's ParamAttr learning_rate, honoured by every optimizer; L2 and AdamW decay scale with it). Patterns as in freeze; the FIRST pattern in the order written that matches a parameter decides, unmatched parameters keep 1; 0 freezes. A pattern that matches nothing, or only parameters an earlier pattern took, is an error.", nullable=True),
        "head_epochs": Key(int, 0, "Two-stage fine-tuning: for the first N epochs only the head trains (the body frozen, its BatchNorm on running statistics); from epoch N+1 the body trains too, at body_lr_mult. N >= Global.epochs keeps the body frozen throughout (linear probe). 0 = off. The stage follows the epoch, so a resumed run picks it up.", bounds=at_least(0, EPOCHS_MAX)),
        "head": Key(list, None, "Patterns of the head for head_epochs; null = the model's last Linear layer plus every parameter the pretrained weights did not provide (a new stem must learn too).", items=((str,), None)),
        "body_lr_mult": Key(float, 0.1, "head_epochs, second stage: learning-rate multiplier of the body (an lr_mult pattern still decides for the parameters it matches).", bounds=NON_NEGATIVE),
        "pretrained_exclude": Key(list, [], "Patterns of parameters NOT loaded from Global.pretrained_model even when name and shape match: a fresh head when the new task has as many classes as the old one.", nullable=True, items=((str,), None)),
    },
    # EMA of the weights (utils/addons/ema.py); PaddleClas's EMA section has `decay` too.
    "EMA": {
        "enable": Key(bool, False, "Keep an exponential moving average of the weights and of the BatchNorm running statistics; every evaluation evaluates both (eval/* raw, eval_ema/* EMA), best_model is whichever is better (\"weights\": ema or raw in the metrics), ema.pdparams is saved beside latest and a resume continues the average exactly."),
        "decay": Key(float, 0.999, "Decay per update, in (0, 1): the average spans about 1/(1-decay) updates."),
        "warmup": Key(bool, True, "Decay of the n-th update is min(decay, (1+n)/(10+n)) (PaddleClas / TensorFlow num_updates), so early averages follow the weights."),
        "every_iters": Key(int, 1, "Update the average every N training iterations."),
    },
    # Mixed precision (utils/addons/amp.py), PaddleClas's AMP key names; hapi's Model.prepare(amp_configs=...).
    "AMP": {
        "level": Key(str, None, "Mixed precision on GPU: O1 (float16 where safe, float32 weights) or O2 (float16 weights); null = float32. On CPU it is ignored with a warning (Paddle's AMP needs a GPU).", choices=("O1", "O2")),
        "scale_loss": Key(float, 32768.0, "Initial loss scaling (GradScaler init_loss_scaling).", bounds=POSITIVE),
        "use_dynamic_loss_scaling": Key(bool, True, "Adapt the loss scaling to overflows (skipped steps) during training."),
        "custom_white_list": Key(list, [], "Op names forced to float16 (auto_cast custom_white_list).", items=((str,), None)),
        "custom_black_list": Key(list, [], "Op names kept in float32 (auto_cast custom_black_list).", items=((str,), None)),
    },
}

# Keys an open section accepts beyond its schema (checked later by their owner).
OPEN_SECTIONS = {"Arch"}


def defaults() -> dict:
    """The full default config as a nested dict."""
    return {sec: {k: copy.deepcopy(key.default) for k, key in keys.items()} for sec, keys in SCHEMA.items()}


def schema_markdown() -> str:
    """The key reference as Markdown (configs/README.md is this text)."""
    out = ["# Config reference", "",
           "Generated from `utils/config/schema.py` by `python tools/config_doc.py --write`; every key a config may set.",
           "Configs inherit with `_base_: [a.yml, b.yml]` (merged in order, the file itself last) and",
           "take overrides on the command line: `-o Optimizer.lr=0.01 -o Global.epochs=5`.",
           "`Arch` also takes the model factory's own arguments (e.g. `depth`, `dim`, `width`);",
           "unknown ones are errors listing the valid ones.",
           "Configs, `_base_` files and file lists are UTF-8 (a BOM is fine); a key written twice in one mapping,",
           "an empty config and a section that is not a mapping are errors. Numbers must be finite (no `.inf`/`.nan`)",
           "and within the range in the type column; `Arch` arguments named `dropout` or `drop_path` are in [0, 1).",
           ""]
    for sec, keys in SCHEMA.items():
        out += [f"## {sec}", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for k, key in keys.items():
            default = yaml.safe_dump(key.default, default_flow_style=True).strip().removesuffix("...").strip()
            out.append(f"| `{k}` | {key.type_name()}{key.range_text()} | `{default}` | {key.help} |")
        out.append("")
    from models import list_models  # imports paddle: deferred until the thread count is set
    from utils.data.transforms import transforms_markdown  # numpy/PIL only

    out += ["## Registered names", "",
            "The values the registries accept today; adding one is a registered function (README, \"Extend it\").", "",
            "| key | registered in | names |", "| --- | --- | --- |",
            f"| `Arch.name` | `models/` (`@register_model`) | {', '.join(list_models())} |",
            f"| `Data.name` | `utils/data/sources/` (`@register_dataset`) | {', '.join(DATASETS)} |",
            f"| `LRScheduler.name` | `utils/schedules.py` (`@register_schedule`) | {', '.join(SCHEDULES)} |", ""]
    out.append(transforms_markdown())
    return "\n".join(out)
