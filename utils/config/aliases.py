"""PaddleClas key names read as ours, and 'did you mean' hints that never cross a unit.

A PaddleClas config (``ppcls/configs/ImageNet/ResNet/ResNet50.yaml``) spells several of our keys
differently and nests some of them (``Optimizer.lr.name``, ``DataLoader.Train.sampler.batch_size``).
:data:`PADDLECLAS` maps each such name to ours with the reason: where unit and meaning agree the
value is taken as an alias with a one-line note naming our key (printed once per process); where
they differ, or we have no equivalent, the key is a one-line ConfigError naming ours and its unit.
:data:`SAME_NAMES` lists the PaddleClas keys that already mean the same here.

:func:`key_hint` is the hint of an unknown key: the table first, then a close name that shares
more than a prefix (``eval_``, ``print_``, ``save_``) and counts in the same unit.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from typing import Any, Callable, Iterable

from utils.config.schema import SCHEMA
from utils.errors import ConfigError

Convert = Callable[[Any, dict[str, Any]], dict[str, Any]]  # (value, the file's PaddleClas names) -> {our key: value}


@dataclasses.dataclass(frozen=True)
class Alias:
    """One PaddleClas name: ``ours`` (``Section.key``), why, and how its value becomes ours.

    ``convert`` (when set) returns ``{our key: value}`` or raises ConfigError; ``refuse`` (when
    set) makes the name an error with that text; ``ours`` None with neither means ignored (a note).
    """
    ours: str | None
    reason: str
    convert: Convert | None = None
    refuse: str | None = None


def _to(key: str) -> Convert:
    return lambda v, flat: {key: v}


def _image_shape(v: Any, flat: dict[str, Any]) -> dict[str, Any]:
    # PaddleClas writes [C, H, W] (export and static mode); our models take square images of side H.
    if isinstance(v, list) and len(v) in (2, 3) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        h, w = v[-2:]
        if h == w:
            return {"Data.image_size": h}
    raise ConfigError(f"Global.image_shape {v!r}: Data.image_size takes one side in pixels (square images, "
                      f"channels come from the data): write Data.image_size: H for [3, H, H]")


def _eval_during_train(v: Any, flat: dict[str, Any]) -> dict[str, Any]:
    if v is True:
        return {}
    raise ConfigError(f"Global.eval_during_train {v!r}: validation always runs here; Global.eval_every_epochs "
                      f"(epochs) sets how often, 0 = only after the last epoch")


LR_NAMES = {"Cosine": "cosine", "Piecewise": "multistep", "MultiStepDecay": "multistep", "Step": "step",
            "Linear": "polynomial", "Polynomial": "polynomial", "Exponential": "exponential", "Constant": "constant",
            "ReduceOnPlateau": "plateau", "OneCycleLR": "onecycle"}


def _lr_name(v: Any, flat: dict[str, Any]) -> dict[str, Any]:
    if v in LR_NAMES:
        return {"LRScheduler.name": LR_NAMES[v]}
    if isinstance(v, str) and v.lower() in LR_NAMES.values():
        return {"LRScheduler.name": v.lower()}
    raise ConfigError(f"Optimizer.lr.name {v!r}: no such schedule here; LRScheduler.name takes "
                      f"{', '.join(sorted(set(LR_NAMES.values())))} (PaddleClas {', '.join(LR_NAMES)})")


def _piecewise_values(v: Any, flat: dict[str, Any]) -> dict[str, Any]:
    # Piecewise [0.1, 0.01, 0.001] is multistep with lr 0.1 and gamma 0.1; other lists have no equivalent.
    ok = isinstance(v, list) and len(v) >= 2 and all(isinstance(x, (int, float)) and x > 0 for x in v)
    if ok:
        ratios = [b / a for a, b in zip(v, v[1:])]
        if all(abs(r - ratios[0]) <= 1e-6 * abs(ratios[0]) for r in ratios):
            return {"Optimizer.lr": float(v[0]), "LRScheduler.gamma": round(ratios[0], 12)}
    raise ConfigError(f"Optimizer.lr.values {v!r}: multistep multiplies the LR by one factor at each milestone: "
                      f"write Optimizer.lr (the first value) and LRScheduler.gamma (the ratio)")


def _regularizer_name(v: Any, flat: dict[str, Any]) -> dict[str, Any]:
    return {"Optimizer.regularizer": v.upper() if isinstance(v, str) else v}


def _list_path(split: str, key: str) -> Convert:
    def convert(v: Any, flat: dict[str, Any]) -> dict[str, Any]:
        # PaddleClas paths are relative to the working directory, ours to Data.data_dir (image_root).
        root = flat.get(f"DataLoader.{split}.dataset.image_root") or flat.get("DataLoader.Train.dataset.image_root")
        if isinstance(v, str) and isinstance(root, str) and not os.path.isabs(v):
            v = os.path.relpath(v, root)
        return {key: v}
    return convert


def _dataset_name(v: Any, flat: dict[str, Any]) -> dict[str, Any]:
    if v in ("ImageNetDataset", "ImageNet"):
        return {"Data.name": "filelist"}
    raise ConfigError(f"DataLoader.*.dataset.name {v!r}: Data.name chooses the dataset here (filelist reads "
                      f"PaddleClas lists, folder a class-folder tree, digits, cifar10, cifar100)")


def _ops(*items: Any) -> list[tuple[str, dict]]:
    out = []
    for item in items:
        if isinstance(item, dict) and len(item) == 1:
            (name, params), = item.items()
            out.append((name, params or {}))
        else:
            return []
    return out


def _loss_train(v: Any, flat: dict[str, Any]) -> dict[str, Any]:
    ops = _ops(*v) if isinstance(v, list) else []
    if len(ops) == 1 and ops[0][0] == "CELoss" and set(ops[0][1]) <= {"weight", "epsilon"} \
            and ops[0][1].get("weight", 1.0) == 1.0:
        out = {"Loss.name": "CrossEntropy"}
        if ops[0][1].get("epsilon") is not None:
            out["Loss.label_smoothing"] = ops[0][1]["epsilon"]
        return out
    raise ConfigError(f"Loss.Train {v!r:.80}: one loss here: Loss.name (CrossEntropy, mse, smooth_l1) and "
                      f"Loss.label_smoothing (PaddleClas CELoss epsilon)")


def _metric_eval(v: Any, flat: dict[str, Any]) -> dict[str, Any]:
    ops = _ops(*v) if isinstance(v, list) else []
    if len(ops) == 1 and ops[0][0] == "TopkAcc" and set(ops[0][1]) <= {"topk"}:
        return {"Metric.topk": ops[0][1].get("topk", [1, 5])}
    raise ConfigError(f"Metric.Eval {v!r:.80}: Metric.topk lists the top-k accuracies here (PaddleClas TopkAcc topk)")


TRANSFORMS = "write Transforms.train / Transforms.eval with this template's op names (configs/README.md, the transform table)"

# PaddleClas name -> ours, with the reason. Checked against ppcls/configs/ImageNet/ResNet/ResNet50.yaml
# (Global, Arch.class_num, Loss.Train/Eval, Optimizer.lr, DataLoader.Train.dataset/sampler/loader, Metric)
# and the LR options of PaddleClas's schedules (warmup_epoch, eta_min, decay_epochs, values).
PADDLECLAS: dict[str, Alias] = {
    "Global.eval_interval": Alias("Global.eval_every_epochs", "both count epochs between validations",
                                  _to("Global.eval_every_epochs")),
    "Global.print_batch_step": Alias("Global.log_every_iters", "both count training iterations (batches) between log lines",
                                     _to("Global.log_every_iters")),
    "Global.save_interval": Alias("Checkpoint.save_every_epochs", "both keep a checkpoint every N epochs (epoch_N here)",
                                  _to("Checkpoint.save_every_epochs")),
    "Global.use_visualdl": Alias("VisualDL.enable", "both switch the VisualDL log on", _to("VisualDL.enable")),
    "Global.class_num": Alias("Data.num_classes", "the class count; here the data gives it, a value that disagrees is an error",
                              _to("Data.num_classes")),
    "Global.image_shape": Alias("Data.image_size", "[C, H, W] -> H: images are resized to H x H, channels come from the data",
                                _image_shape),
    "Global.eval_during_train": Alias("Global.eval_every_epochs", "validation always runs here (true is accepted)",
                                      _eval_during_train),
    "Global.save_inference_dir": Alias(None, "no key", refuse="python tools/export.py RUN writes RUN/inference "
                                       "(PaddleX 3 layout): no config key"),
    "Global.to_static": Alias(None, "no key", refuse="training runs in dynamic graph here; tools/export.py "
                              "converts with paddle.jit.save: remove it"),
    "Arch.class_num": Alias("Data.num_classes", "the class count; the model's head follows the data here",
                            _to("Data.num_classes")),
    "Optimizer.lr.name": Alias("LRScheduler.name", "the schedule (Cosine -> cosine, Piecewise -> multistep, ...)", _lr_name),
    "Optimizer.lr.learning_rate": Alias("Optimizer.lr", "the base (peak) learning rate", _to("Optimizer.lr")),
    "Optimizer.lr.warmup_epoch": Alias("LRScheduler.warmup_epochs", "both in epochs", _to("LRScheduler.warmup_epochs")),
    "Optimizer.lr.warmup_start_lr": Alias("LRScheduler.warmup_start_lr", "same meaning", _to("LRScheduler.warmup_start_lr")),
    "Optimizer.lr.eta_min": Alias("LRScheduler.eta_min", "cosine's final LR", _to("LRScheduler.eta_min")),
    "Optimizer.lr.step_size": Alias("LRScheduler.step_size", "both in epochs", _to("LRScheduler.step_size")),
    "Optimizer.lr.gamma": Alias("LRScheduler.gamma", "same meaning", _to("LRScheduler.gamma")),
    "Optimizer.lr.milestones": Alias("LRScheduler.milestones", "both in epochs", _to("LRScheduler.milestones")),
    "Optimizer.lr.decay_epochs": Alias("LRScheduler.milestones", "Piecewise's epochs of each decay", _to("LRScheduler.milestones")),
    "Optimizer.lr.values": Alias("LRScheduler.gamma", "Piecewise's LRs: the first is Optimizer.lr, their ratio gamma",
                                 _piecewise_values),
    "Optimizer.lr.end_lr": Alias("LRScheduler.end_lr", "same meaning", _to("LRScheduler.end_lr")),
    "Optimizer.lr.power": Alias("LRScheduler.power", "same meaning", _to("LRScheduler.power")),
    "Optimizer.regularizer.name": Alias("Optimizer.regularizer", "L2 or L1", _regularizer_name),
    "Optimizer.regularizer.coeff": Alias("Optimizer.weight_decay", "the penalty coefficient", _to("Optimizer.weight_decay")),
    "DataLoader.Train.sampler.batch_size": Alias("DataLoader.batch_size", "the training batch", _to("DataLoader.batch_size")),
    "DataLoader.Train.sampler.shuffle": Alias("DataLoader.shuffle", "same meaning", _to("DataLoader.shuffle")),
    "DataLoader.Train.sampler.drop_last": Alias("DataLoader.drop_last", "same meaning", _to("DataLoader.drop_last")),
    "DataLoader.Train.sampler.name": Alias(None, "the sampler is chosen here (distributed when launched so)"),
    "DataLoader.Train.loader.num_workers": Alias("DataLoader.num_workers", "same meaning", _to("DataLoader.num_workers")),
    "DataLoader.Train.loader.use_shared_memory": Alias("DataLoader.use_shared_memory", "same meaning",
                                                       _to("DataLoader.use_shared_memory")),
    "DataLoader.Train.dataset.name": Alias("Data.name", "ImageNetDataset (a list of 'path label' lines) is filelist",
                                           _dataset_name),
    "DataLoader.Train.dataset.image_root": Alias("Data.data_dir", "the root the list's paths are relative to",
                                                 _to("Data.data_dir")),
    "DataLoader.Train.dataset.cls_label_path": Alias("Data.train_list", "the training list, made relative to image_root",
                                                     _list_path("Train", "Data.train_list")),
    "DataLoader.Train.dataset.transform_ops": Alias("Transforms.train", "other op names", refuse=TRANSFORMS),
    "DataLoader.Eval.sampler.batch_size": Alias("DataLoader.eval_batch_size", "the validation batch",
                                                _to("DataLoader.eval_batch_size")),
    "DataLoader.Eval.sampler.name": Alias(None, "the validation sampler is fixed here"),
    "DataLoader.Eval.sampler.shuffle": Alias(None, "validation is never shuffled here"),
    "DataLoader.Eval.sampler.drop_last": Alias(None, "validation keeps every sample here"),
    "DataLoader.Eval.loader.num_workers": Alias("DataLoader.num_workers", "one worker count for both loaders",
                                                _to("DataLoader.num_workers")),
    "DataLoader.Eval.loader.use_shared_memory": Alias("DataLoader.use_shared_memory", "one setting for both loaders",
                                                      _to("DataLoader.use_shared_memory")),
    "DataLoader.Eval.dataset.name": Alias("Data.name", "ImageNetDataset is filelist", _dataset_name),
    "DataLoader.Eval.dataset.image_root": Alias("Data.data_dir", "one root for both lists", _to("Data.data_dir")),
    "DataLoader.Eval.dataset.cls_label_path": Alias("Data.val_list", "the validation list, made relative to image_root",
                                                    _list_path("Eval", "Data.val_list")),
    "DataLoader.Eval.dataset.transform_ops": Alias("Transforms.eval", "other op names", refuse=TRANSFORMS),
    "Loss.Train": Alias("Loss.name", "CELoss -> CrossEntropy, its epsilon -> Loss.label_smoothing", _loss_train),
    "Loss.Eval": Alias(None, "validation reports the training loss (Loss.name)"),
    "Metric.Eval": Alias("Metric.topk", "TopkAcc topk -> Metric.topk", _metric_eval),
    "Metric.Train": Alias(None, "training logs loss and accuracy of each batch"),
}

# PaddleClas keys that have the same name and meaning here (no translation needed).
SAME_NAMES = {
    "Global.epochs": "epochs of training",
    "Global.pretrained_model": "weights loaded before training (a prefix without .pdparams works too)",
    "Global.checkpoints": "resume from this checkpoint (or run directory)",
    "Global.output_dir": "root of the outputs (runs go to <output_dir>/<config name>/<timestamp>)",
    "Global.device": "cpu or gpu (auto too)",
    "EMA.decay": "decay per update; PaddleClas turns EMA on by the section's presence, here EMA.enable: true does",
    "AMP.scale_loss": "initial loss scaling",
    "AMP.use_dynamic_loss_scaling": "same meaning",
}

_noted: set[str] = set()


def note(text: str) -> None:
    """Print ``note: text`` on stderr, once per process (a config is loaded by several tools in one run)."""
    if text not in _noted:
        _noted.add(text)
        print(f"note: {text}", file=sys.stderr)


def prefixes() -> set[str]:
    """Every dotted prefix of a PaddleClas name (``Optimizer.lr``, ``DataLoader.Train.sampler``, ...)."""
    out = set()
    for name in PADDLECLAS:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def _under(prefix: str) -> str:
    names = [n for n in PADDLECLAS if n.startswith(prefix + ".")]
    return ", ".join(names)


def translate(name: str, value: Any, flat: dict[str, Any], where: str) -> dict[str, Any]:
    """``{our key: value}`` for PaddleClas name ``name`` (a leaf) set to ``value``.

    Raises:
        ConfigError: a refused name (its unit or meaning differs), a value that has no equivalent, or a
            name under a PaddleClas section that is not in the table.
    """
    alias = PADDLECLAS.get(name)
    if alias is None:
        parent = name.rsplit(".", 1)[0]
        while parent and not _under(parent):
            parent = parent.rsplit(".", 1)[0] if "." in parent else ""
        known = _under(parent) if parent else ""
        raise ConfigError(f"{where}: PaddleClas key '{name}' has no equivalent here"
                          + (f" (read here: {known})" if known else "") + "; see configs/README.md for the keys")
    if alias.refuse:
        raise ConfigError(f"{where}: {name} (PaddleClas): {alias.refuse}")
    if alias.convert is None:
        note(f"{name} (PaddleClas) ignored: {alias.reason}")
        return {}
    try:
        out = alias.convert(value, flat)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if out:
        shown = ", ".join(f"{k}: {v!r}" for k, v in out.items())
        note(f"{name} (PaddleClas) read as {shown} ({alias.reason})")
    return out


UNIT_WORDS = {"epoch": "epochs", "epochs": "epochs", "iter": "iterations", "iters": "iterations",
              "iteration": "iterations", "iterations": "iterations", "step": "iterations", "steps": "iterations",
              "batch": "iterations", "minute": "minutes", "minutes": "minutes"}


def _units(name: str) -> set[str]:
    return {UNIT_WORDS[t] for t in name.lower().split("_") if t in UNIT_WORDS}


def _plausible(name: str, candidate: str) -> bool:
    """Whether ``candidate`` may be what ``name`` misspells: not another unit, not only a shared prefix."""
    a, b = name.lower().split("_"), candidate.lower().split("_")
    ua, ub = _units(name), _units(candidate)
    if ua and ub and ua != ub:
        return False  # eval_every_epoch vs eval_every_iters: a different unit, never a typo fix
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    j = 0
    while j < min(len(a), len(b)) - i and a[-1 - j] == b[-1 - j]:
        j += 1
    rest_a, rest_b = "_".join(a[i:len(a) - j]), "_".join(b[i:len(b) - j])
    if i or j:
        # eval_interval vs eval_every_iters share 'eval_' only: the rest matches 0.42
        return not rest_a or not rest_b or difflib.SequenceMatcher(None, rest_a, rest_b).ratio() >= 0.5
    # no word in common: a typo is close overall (lrr/lr 0.8); save_interval/log_every_iters is 0.5
    return difflib.SequenceMatcher(None, name.lower(), candidate.lower()).ratio() >= 0.6


def key_hint(section: str, key: str, candidates: Iterable[str]) -> str:
    """The hint after an unknown ``section.key``: the PaddleClas mapping when there is one, else
    ``" (did you mean 'x'?)"`` for a close key of the same unit and meaning, else ''."""
    name = f"{section}.{key}" if section else str(key)
    alias = PADDLECLAS.get(name)
    if alias is not None and alias.ours:
        return f" (PaddleClas name; here: {alias.ours})"
    if name in prefixes():
        return f" (PaddleClas section; read here: {_under(name)})"
    # a misspelt PaddleClas name (eval_intervl): point at the name and ours, not at a look-alike of ours
    near = difflib.get_close_matches(name, [n for n, a in PADDLECLAS.items() if a.ours and n.count(".") == 1],
                                     n=1, cutoff=0.85)
    if near and section:
        return f" (PaddleClas's '{near[0]}'? here: {PADDLECLAS[near[0]].ours})"
    candidates = [str(c) for c in candidates]
    for match in difflib.get_close_matches(str(key), candidates, n=len(candidates) or 1, cutoff=0.5):
        if _plausible(str(key), match):
            return f" (did you mean '{match}'?)"
    low = str(key).lower()
    return next((f" (did you mean '{c}'?)" for c in candidates if c.lower() == low), "")


def rename_paddleclas(data: dict, where: Callable[[str], str]) -> dict[str, str]:
    """Replace one file's PaddleClas names by ours, in place (``where(name)``: file:line of a name).

    Done per file, before the ``_base_`` merge, so a later file still overrides an earlier one
    whichever spelling each uses. Returns ``{our key: where the PaddleClas name was written}``.

    Raises:
        ConfigError: a refused name, two names for one key with different values, or a
            PaddleClas name and our own key both set in the file.
    """
    pre = prefixes()
    leaves: dict[str, Any] = {}

    def flatten(name: str, value: dict) -> None:
        for k, v in value.items():
            sub = f"{name}.{k}"
            if sub not in PADDLECLAS and isinstance(v, dict) and sub in pre:
                flatten(sub, v)
            else:
                leaves[sub] = v

    for sec, body in data.items():
        if not isinstance(body, dict) or not isinstance(sec, str):
            continue
        for k in list(body):
            name, v = f"{sec}.{k}", body[k]
            ours = SCHEMA.get(sec, {}).get(k)
            if name in PADDLECLAS and ours is None:
                leaves[name] = body.pop(k)
            elif name in pre and isinstance(v, dict) and (ours is None or dict not in ours.types):
                flatten(name, body.pop(k))  # Optimizer.lr: {name: Cosine, ...}, DataLoader.Train: {...}
    if not leaves:
        return {}
    found: dict[str, tuple[Any, str]] = {}
    for name, value in leaves.items():
        for key, v in translate(name, value, leaves, where(name)).items():
            sec, k = key.split(".")
            if key in found and found[key][0] != v:
                raise ConfigError(f"{where(name)}: {name} and {found[key][1]} (PaddleClas) both set {key}, "
                                  f"to {v!r} and {found[key][0]!r}: keep one")
            if isinstance(data.get(sec), dict) and k in data[sec]:
                raise ConfigError(f"{where(name)}: {name} (PaddleClas) and {key} both set {key}: keep one")
            found[key] = (v, name)
    for key, (v, _) in found.items():
        sec, k = key.split(".")
        if not isinstance(data.get(sec), dict):
            data[sec] = {}
        data[sec][k] = v
    return {key: where(name) for key, (_, name) in found.items()}
