"""The training doctor: findings about a run, live (a hapi callback) and offline (a run directory).

Three layers, each usable alone:

* **Findings** (:class:`Finding`): an id, a severity (info / warn / error), the step and epoch,
  an evidence dict of numbers, and a message and a remedy rendered in English or Chinese from
  one table, :data:`MESSAGES`, keyed by finding id.
* **Rules**: pure functions over plain series (lists of ``(step, value)`` pairs, the evaluation
  history, the latest per-layer statistics) that return findings; :func:`diagnose` runs them
  all. No Paddle needed, so each is tested on scripted sequences.
* **Collection**: :class:`Doctor`, a hapi callback that records the training loss per step, the
  validation history (as a listener of ``on_eval_end``), the global gradient norm every
  ``grad_every`` steps and per-layer activation/gradient statistics every ``sample_every``
  steps, stops at once on a non-finite loss and names where the first non-finite value came
  from; and :func:`diagnose_run`, which rebuilds the series of any finished or crashed run
  directory from ``metrics.json``, the VisualDL log and ``diagnosis.json`` and re-runs the rules.

Gradients: hapi's ``train_batch`` runs backward, the optimizer step and ``clear_gradients``
inside one call, so no callback hook ever sees a gradient. The optimizer calls its
``_grad_clip`` with the ``(param, grad)`` list right before the update, in dygraph mode, on
every step; :class:`GradMonitor` wraps whatever clip the config asked for (or none) and
records the norms there, then delegates. On a step whose loss or input batch is non-finite (or
whose measured gradients or weights are) it replays the step's input batch through the network
with the parameters still *before* that step's update (to name the layer), and hands the
optimizer zero gradients, so the weights in memory stay the last good ones; the run stops.

The input batch is checked every step because ``relu(NaN)`` is 0 in Paddle: a NaN pixel can
leave the loss finite while the backward pass writes NaN into the first layer's weights, after
which the network silently outputs a constant.
"""
import json
import math
import os
import string
from dataclasses import dataclass, field

import numpy as np
import paddle
from paddle import nn
from paddle.callbacks import Callback
from paddle.nn.clip import ClipGradBase, _squared_l2_norm

from utils.errors import UserError, check_int

# ----------------------------------------------------------------------------- thresholds

# Smoothing of the per-step training loss: an exponential moving average with this factor
# (about a 10-step window, bias-corrected), as the LR range test smooths its curve.
LOSS_EMA = 0.9
# Divergence: the smoothed loss exceeds this multiple of its best so far. The LR range test's
# stop rule (fastai; issue #3 section 2) uses 4x: past it, the loss does not come back.
DIVERGE_FACTOR = 4.0
# ... and it must also have risen by at least this fraction of the starting loss: near zero loss
# 0.01 -> 0.05 is 5x but only mini-batch noise, not divergence.
DIVERGE_MIN_RISE = 0.25
# Oscillation, measured over the last OSC_WINDOW_FRACTION of the steps (at least
# OSC_MIN_STEPS): the step-to-step noise (std of the first differences / sqrt 2, which a smooth
# trend hardly affects) above OSC_RATIO x the loss level means the updates overshoot ...
OSC_WINDOW_FRACTION = 1 / 3
OSC_MIN_STEPS = 30
OSC_RATIO = 0.5
# ... when the noise is also large in absolute terms (this fraction of the starting loss): at a
# loss near zero mini-batch noise is large relative to the level but harmless.
OSC_MIN_NOISE = 0.1
# Plateau: neither the val loss nor the val accuracy improved for this many evaluations
# (LRScheduler.patience's default is 5 too) ...
PLATEAU_EVALS = 5
# ... an improvement being a relative loss decrease above this (0.1%) or any accuracy increase.
PLATEAU_MIN_DELTA = 1e-3
# Accuracy rules look at the last ACC_EVALS evaluations (one or two can be chance by luck).
ACC_EVALS = 3
# "At chance": the accuracy a majority-class guesser gets plus two binomial standard errors of
# a val set of that size (95% of chance-level runs fall below), at least ACC_CHANCE_MIN_MARGIN.
ACC_CHANCE_SIGMAS = 2.0
ACC_CHANCE_MIN_MARGIN = 0.02
# Train/val loss patterns: trends over the last PATTERN_WINDOW evaluations (at least
# PATTERN_MIN_EVALS). A least-squares line whose change over the window is within TREND_FLAT of
# the mean level is "flat": epoch-to-epoch val loss noise on digits is ~1-2%.
PATTERN_WINDOW = 5
PATTERN_MIN_EVALS = 3
TREND_FLAT = 0.03
# ... and a move smaller than this fraction of ln(num_classes) is flat whatever its relative size:
# a training loss near zero going 0.001 -> 0.002 is +100% but nothing.
TREND_MIN_ABS = 0.01
# Val loss this far (5%) above its best, the best being earlier, counts as rising even when the
# window's line is flat.
VAL_RISE = 0.05
# "Still high" for a loss: above this fraction of the chance-level loss ln(num_classes). Both
# flat above it = a bottleneck; below it = converged.
HIGH_LOSS_FRACTION = 0.25
# Train loss above val loss by more than this (10%) at the end.
TRAIN_ABOVE_VAL = 0.10
# Dropout at or above this is "strong"; with it, both losses above POOR_LOSS_FRACTION of
# ln(num_classes) at the end is "both poor": the network removed less than half the uncertainty.
DROPOUT_HIGH = 0.5
POOR_LOSS_FRACTION = 0.5
# Late in training = the last LATE_FRACTION of the steps. Near uniform = the mean top softmax
# probability has not got UNIFORM_MARGIN of the way from 1/C (uniform) to 1 (certain).
# (A randomly initialised network already shows ~0.2 on 10 classes.) Nothing is judged "late"
# before LATE_MIN_STEP updates: a network that has barely trained is not expected to be confident.
LATE_FRACTION = 0.25
UNIFORM_MARGIN = 0.2
LATE_MIN_STEP = 50
# Clipping: clipped on more than this fraction of the sampled steps (issue #3: above half, lower
# the LR instead), judged from at least CLIP_MIN_SAMPLES samples.
CLIP_FRACTION = 0.5
CLIP_MIN_SAMPLES = 5
# A global gradient norm above this is exploding: with a mean-reduced cross-entropy the gradient
# w.r.t. the logits is at most sqrt(2) per sample, and healthy networks with normalized inputs
# show norms of 0.1-10.
GRAD_EXPLODE = 1e3
# A weight's gradient RMS below this fraction of the largest gradient RMS in the network
# (biases included: the head's bias always gets an O(0.1) gradient) has vanished. Healthy
# networks stay within ~1e-2 of it.
GRAD_VANISH_RATIO = 1e-4
# Activations: a layer output RMS below ACT_VANISH x (or above ACT_EXPLODE x) the RMS of the
# network input. Healthy layers stay within ~1e-2..1e2 of a normalized input.
ACT_VANISH = 1e-3
ACT_EXPLODE = 1e3
# A ReLU layer with more than this fraction of units that are zero for the whole sampled batch.
DEAD_RELU_FRACTION = 0.5

# Unshuffled batches: the mean share of the most common label in the sampled training batches
# more than half way from the class prior (a shuffled loader's share for large batches) to 1 (one
# class per batch), over at least PURITY_MIN_SAMPLES batches of at least PURITY_MIN_BATCH images
# (tiny batches are pure by chance).
PURITY_MARGIN = 0.5
PURITY_MIN_SAMPLES = 5
PURITY_MIN_BATCH = 8

# Regression: targets not normalized whose root mean square (in the units the loss sees) is above
# this are flagged: a freshly initialised network outputs O(1), so its MSE starts near mean(y^2).
TARGET_RMS_MAX = 10.0
# Regression: "still high" for flat losses = above this fraction of the loss of predicting the
# training mean (1 - R^2 > 0.9). Noisy targets keep much of their variance (diabetes: R^2 ~0.5),
# so the classification threshold (HIGH_LOSS_FRACTION of ln C) would call every such run a bottleneck.
REGRESSION_HIGH_LOSS_FRACTION = 0.9

SEVERITIES = ("error", "warn", "info")
# Finding id -> the kind of source locate_nonfinite reports.
NAN_SOURCES = {"nan_input": "input", "nan_weights": "weights", "nan_layer": "layer", "nan_op": "op",
               "nan_loss_fn": "loss"}
# Findings computed from the per-step training loss (kept from diagnosis.json when a run has no VisualDL log).
STEP_RULES = ("nan_loss", "divergence", "oscillation")
_RELU_TYPES = ("ReLU", "ReLU6")

# ----------------------------------------------------------------------------- messages

# id -> {lang: (message, remedy)}; fields are filled from the finding's evidence plus step/epoch.
MESSAGES = {
    "nan_loss": {
        "en": ("training loss became {loss} at step {step}; training stopped there",
               "likely causes: a learning rate too high (lower Optimizer.lr 3-10x, add LRScheduler.warmup_epochs, "
               "clip with Optimizer.grad_clip=global_norm), bad input (NaN/Inf in the data), log(0) in a custom "
               "loss. Checkpoints are never written with non-finite weights: latest/best_model hold the last good ones"),
        "zh": ("第 {step} 步训练损失变为 {loss}，训练已在此停止",
               "常见原因：学习率过大（把 Optimizer.lr 降低 3-10 倍，设置 LRScheduler.warmup_epochs，或用 "
               "Optimizer.grad_clip=global_norm 裁剪梯度）、输入数据有问题（含 NaN/Inf）、自定义损失中出现 log(0)。"
               "检查点从不保存非有限权重：latest/best_model 中是最后一次正常的权重"),
    },
    "nan_input": {
        "en": ("the input batch of step {step} holds {count} non-finite values ({fraction:.2%} of it)",
               "clean the data: NaN/Inf pixels, a division by a zero std in preprocessing, corrupt files; "
               "the network cannot recover from a NaN input"),
        "zh": ("第 {step} 步的输入批次含 {count} 个非有限值（占 {fraction:.2%}）",
               "清洗数据：检查 NaN/Inf 像素、预处理中除以为零的标准差、损坏的文件；网络无法从 NaN 输入中恢复"),
    },
    "nan_weights": {
        "en": ("parameter {param} was already non-finite before step {step}",
               "an earlier update overflowed: lower the learning rate, clip gradients (Optimizer.grad_clip), "
               "check for an extreme weight decay"),
        "zh": ("第 {step} 步之前参数 {param} 已经是非有限值",
               "之前的某次更新已经溢出：降低学习率、裁剪梯度（Optimizer.grad_clip），检查权重衰减是否过大"),
    },
    "nan_layer": {
        "en": ("layer {layer} ({type}) produced the first non-finite value at step {step} from finite inputs "
               "(largest |input| {input_absmax:.3g}, largest |weight| {weight_absmax:.3g})",
               "an overflow: usually a learning rate too high that grew the weights (lower Optimizer.lr, add "
               "warmup, clip gradients); for exp/log/sqrt/division inside that layer add an epsilon"),
        "zh": ("第 {step} 步，层 {layer}（{type}）在输入有限的情况下最先产生非有限值"
               "（输入最大绝对值 {input_absmax:.3g}，权重最大绝对值 {weight_absmax:.3g}）",
               "数值溢出：通常是学习率过大使权重变得过大（降低 Optimizer.lr、加预热、裁剪梯度）；"
               "若该层内有 exp/log/sqrt/除法，请加上 epsilon"),
    },
    "nan_op": {
        "en": ("at step {step} the first non-finite value appeared before layer {layer} ({type}) was called: "
               "in a functional op (exp, log, sqrt, division) of the code that calls it",
               "look at the forward() that calls {layer}: add an epsilon to log/sqrt/division, clamp exp; "
               "lower the learning rate if values grew large"),
        "zh": ("第 {step} 步，非有限值在调用层 {layer}（{type}）之前就已出现：来自调用它的代码中的函数式运算"
               "（exp、log、sqrt、除法）",
               "检查调用 {layer} 的 forward()：给 log/sqrt/除法加 epsilon，限制 exp 的输入；数值过大时降低学习率"),
    },
    "nan_loss_fn": {
        "en": ("the network's outputs were finite at step {step} but the loss was {loss}",
               "the loss computation produced it: log(0) or a division by zero in a custom loss, labels outside "
               "[0, num_classes); compute cross-entropy from logits (log_softmax), not log(softmax)"),
        "zh": ("第 {step} 步网络输出是有限值，但损失为 {loss}",
               "问题出在损失计算：自定义损失中的 log(0) 或除以零，或标签超出 [0, num_classes)；"
               "请从 logits 计算交叉熵（log_softmax），不要用 log(softmax)"),
    },
    "divergence": {
        "en": ("the training loss rose fast: smoothed {value:.4g} at step {step}, {ratio:.1f}x its best "
               "{best:.4g} (step {best_step})",
               "the learning rate is too high for this model and batch size: lower Optimizer.lr 3-10x, add warmup "
               "(LRScheduler.warmup_epochs) or clip gradients (Optimizer.grad_clip=global_norm)"),
        "zh": ("训练损失快速上升：第 {step} 步平滑损失为 {value:.4g}，是其最佳值 {best:.4g}（第 {best_step} 步）的 "
               "{ratio:.1f} 倍",
               "对该模型和批大小而言学习率过大：把 Optimizer.lr 降低 3-10 倍，加预热（LRScheduler.warmup_epochs）"
               "或裁剪梯度（Optimizer.grad_clip=global_norm）"),
    },
    "oscillation": {
        "en": ("the training loss oscillates: over the last {window} steps its step-to-step noise is {noise:.3g} "
               "against a level of {level:.3g} ({ratio:.2f} of it)",
               "the updates overshoot: lower the learning rate or raise the batch size (DataLoader.batch_size)"),
        "zh": ("训练损失振荡：最近 {window} 步中，相邻步之间的波动为 {noise:.3g}，而损失水平为 {level:.3g}"
               "（波动是水平的 {ratio:.2f} 倍）",
               "更新步长过大：降低学习率或增大批大小（DataLoader.batch_size）"),
    },
    "plateau": {
        "en": ("no improvement of the val loss or {metric} for {evals} evaluations (best loss {best_loss:.4g}, "
               "best {metric} {best_metric:.4g}; last improvement at step {best_step})",
               "lower the learning rate (a decaying schedule, or LRScheduler.name=plateau) or stop earlier "
               "(EarlyStopping.patience); if the loss never fell much, the LR may be too low or the model too small"),
        "zh": ("验证损失和 {metric} 已连续 {evals} 次评估没有改善（最佳损失 {best_loss:.4g}，最佳 {metric} {best_metric:.4g}；"
               "最后一次改善在第 {best_step} 步）",
               "降低学习率（使用衰减的学习率策略，或 LRScheduler.name=plateau），或更早停止（EarlyStopping.patience）；"
               "若损失一直没怎么下降，可能是学习率过小或模型太小"),
    },
    "acc_stuck": {
        "en": ("val accuracy stayed at exactly {acc:.4f}, chance level, for the last {evals} evaluations (the "
               "majority class makes up {majority_rate:.4f} of the val set): the predictions do not change, "
               "typically the network predicts one class",
               "typical causes: data sorted by class and not shuffled (DataLoader.shuffle=true), a learning rate "
               "so high the outputs saturate, dead units; check the class balance"),
        "zh": ("最近 {evals} 次评估中验证准确率一直恰好是 {acc:.4f}，处于随机水平（验证集中最多的类别占 "
               "{majority_rate:.4f}）：预测结果不再变化，通常是网络只预测一个类别",
               "常见原因：数据按类别排序且未打乱（设 DataLoader.shuffle=true）、学习率过大导致输出饱和、"
               "神经元死亡；检查类别是否均衡"),
    },
    "acc_chance": {
        "en": ("val accuracy is at chance level: {acc:.4f} on average over the last {evals} evaluations, vs "
               "{majority_rate:.4f} for always predicting the majority class",
               "nothing generalises: check that the labels match the images (a shuffled or misaligned label list, "
               "a different class order in train and val) and that the inputs carry signal"),
        "zh": ("验证准确率处于随机水平：最近 {evals} 次评估平均为 {acc:.4f}，而总预测最多类别可得 {majority_rate:.4f}",
               "模型没有学到可泛化的东西：检查标签是否与图片对应（标签列表被打乱或错位、训练集和验证集的类别顺序不同），"
               "以及输入是否含有信息"),
    },
    "unshuffled_batches": {
        "en": ("training batches hold mostly one class: on average {purity:.0%} of a sampled batch ({samples} "
               "batches of ~{batch:.0f}) shares one label, vs ~{expected:.0%} for shuffled data",
               "the loader feeds the data in class order: shuffle it (DataLoader.shuffle=true) or shuffle the file "
               "list; the network chases the current class and the loss jumps at every class change"),
        "zh": ("训练批次几乎只含一个类别：采样的 {samples} 个批次（每批约 {batch:.0f} 张）中平均有 {purity:.0%} 的样本"
               "标签相同，而打乱的数据约为 {expected:.0%}",
               "数据加载器按类别顺序送入数据：请打乱数据（DataLoader.shuffle=true）或打乱文件列表；"
               "否则网络只追随当前类别，每次换类别时损失都会跳升"),
    },
    "still_learning": {
        "en": ("train and val loss are both still falling ({train_change:+.1%} and {val_change:+.1%} over the "
               "last {evals} evaluations)",
               "the model is still learning: train longer (Global.epochs) before changing anything else"),
        "zh": ("训练损失和验证损失都仍在下降（最近 {evals} 次评估中分别变化 {train_change:+.1%} 和 {val_change:+.1%}）",
               "模型仍在学习：先增加训练轮数（Global.epochs），再考虑改其他设置"),
    },
    "overfitting": {
        "en": ("train loss is still falling ({train_change:+.1%} over the last {evals} evaluations) while the val "
               "loss is not ({val_change:+.1%}; now {val_last:.4g}, best {val_best:.4g} at step {val_best_step}; "
               "train {train_last:.4g})",
               "overfitting: more data or augmentation, regularization (Optimizer.weight_decay, dropout, "
               "Loss.label_smoothing), a smaller model, or stop earlier (the best checkpoint keeps the best epoch)"),
        "zh": ("训练损失仍在下降（最近 {evals} 次评估变化 {train_change:+.1%}），验证损失却没有"
               "（变化 {val_change:+.1%}；当前 {val_last:.4g}，最佳 {val_best:.4g} 在第 {val_best_step} 步；"
               "训练损失 {train_last:.4g}）",
               "过拟合：增加数据或数据增强、加正则（Optimizer.weight_decay、dropout、Loss.label_smoothing）、"
               "换更小的模型，或更早停止（最佳检查点保留了最好的一轮）"),
    },
    "data_problem": {
        "en": ("train loss is flat ({train_change:+.1%}) while the val loss falls ({val_change:+.1%}) over the "
               "last {evals} evaluations",
               "unusual, points at the data: train and val may come from different distributions, the training "
               "labels may be noisy, or the augmentation too strong"),
        "zh": ("最近 {evals} 次评估中训练损失持平（{train_change:+.1%}）而验证损失在下降（{val_change:+.1%}）",
               "这种情况不常见，多半是数据问题：训练集和验证集分布不同、训练标签噪声大，或数据增强过强"),
    },
    "bottleneck": {
        "en": ("train and val loss are both flat ({train_change:+.1%} and {val_change:+.1%} over the last "
               "{evals} evaluations) and still high (train {train_last:.4g}, val {val_last:.4g}; chance level "
               "{init_loss:.4g})",
               "a bottleneck: lower the learning rate or the batch size; if the loss never fell from its starting "
               "value the LR is more likely far too low (try an LR range test); otherwise a larger model"),
        "zh": ("训练损失和验证损失都持平（最近 {evals} 次评估分别变化 {train_change:+.1%} 和 {val_change:+.1%}）"
               "且仍然很高（训练 {train_last:.4g}，验证 {val_last:.4g}；随机水平 {init_loss:.4g}）",
               "遇到瓶颈：降低学习率或批大小；若损失从一开始就没有下降，更可能是学习率过小（试试学习率范围测试）；"
               "否则换更大的模型"),
    },
    "converged": {
        "en": ("train and val loss are both flat ({train_change:+.1%} and {val_change:+.1%} over the last "
               "{evals} evaluations) at a low level (train {train_last:.4g}, val {val_last:.4g}): converged",
               "more epochs at this learning rate will not help: stop earlier, or decay the LR further for a "
               "last small gain"),
        "zh": ("训练损失和验证损失都在较低水平持平（最近 {evals} 次评估分别变化 {train_change:+.1%} 和 "
               "{val_change:+.1%}；训练 {train_last:.4g}，验证 {val_last:.4g}）：已收敛",
               "在当前学习率下继续训练无益：可以更早停止，或进一步降低学习率以获得最后一点提升"),
    },
    "both_rising": {
        "en": ("train and val loss are both rising ({train_change:+.1%} and {val_change:+.1%} over the last "
               "{evals} evaluations)",
               "check the structure, the hyperparameters and the data: a learning rate too high (lower it), a bug "
               "in the model, data that changes during training"),
        "zh": ("训练损失和验证损失都在上升（最近 {evals} 次评估分别变化 {train_change:+.1%} 和 {val_change:+.1%}）",
               "检查网络结构、超参数和数据：学习率过大（降低它）、模型有错误、训练中数据发生变化"),
    },
    "train_above_val": {
        "en": ("at the end the train loss ({train_last:.4g}) is {ratio:.0%} above the val loss ({val_last:.4g})",
               "dropout (here {dropout:g}), augmentation and an epoch-averaged train loss that lags the weights "
               "legitimately make the train loss higher; otherwise the val set may be too small ({n_val} images) "
               "or the two losses are not computed the same way (a metric bug)"),
        "zh": ("结束时训练损失（{train_last:.4g}）比验证损失（{val_last:.4g}）高 {ratio:.0%}",
               "dropout（此处为 {dropout:g}）、数据增强以及按轮平均、滞后于权重的训练损失都会合理地使训练损失偏高；"
               "否则可能是验证集太小（{n_val} 张图片），或两个损失的计算方式不同（指标有错误）"),
    },
    "dropout_too_strong": {
        "en": ("both losses stay poor with dropout {dropout:g}: train {train_last:.4g}, val {val_last:.4g} "
               "(chance level {init_loss:.4g})",
               "dropout too strong: lower it (0.1-0.3 for MLPs, 0.5 at most), or use a larger model"),
        "zh": ("dropout 为 {dropout:g} 时两个损失都很差：训练 {train_last:.4g}，验证 {val_last:.4g}（随机水平 {init_loss:.4g}）",
               "dropout 过强：调低它（MLP 用 0.1-0.3，最多 0.5），或换更大的模型"),
    },
    "uniform_confidence": {
        "en": ("late in training (from step {from_step}) the softmax confidence is still near uniform: mean top "
               "probability {confidence:.3f} vs {uniform:.3f} for a uniform guess over {num_classes} classes",
               "the network has not learned the class boundaries yet: train longer, raise the learning rate if "
               "the loss is flat, check the labels"),
        "zh": ("训练后期（从第 {from_step} 步起）softmax 置信度仍接近均匀分布：最大类别概率平均为 {confidence:.3f}，"
               "而在 {num_classes} 个类别上均匀猜测为 {uniform:.3f}",
               "网络还没有学会类别边界：训练更久；若损失持平则提高学习率；检查标签"),
    },
    "clipped_often": {
        "en": ("gradients were clipped on {fraction:.0%} of the {samples} sampled steps ({clip} at {clip_value:g}; "
               "median global norm {median_norm:.3g})",
               "clipping that often means the learning rate is too high: lower Optimizer.lr rather than rely on "
               "clipping, or raise Optimizer.clip_value"),
        "zh": ("在 {samples} 个采样步中有 {fraction:.0%} 的梯度被裁剪（{clip}，阈值 {clip_value:g}；"
               "全局梯度范数中位数 {median_norm:.3g}）",
               "如此频繁的裁剪说明学习率过大：应降低 Optimizer.lr 而不是依赖裁剪，或调大 Optimizer.clip_value"),
    },
    "exploding_gradients": {
        "en": ("the global gradient norm reached {norm:.3g} at step {step} (median {median:.3g})",
               "lower the learning rate, clip gradients (Optimizer.grad_clip=global_norm), use normalization "
               "layers and a scaled init (Arch.init=kaiming or xavier)"),
        "zh": ("第 {step} 步全局梯度范数达到 {norm:.3g}（中位数 {median:.3g}）",
               "降低学习率、裁剪梯度（Optimizer.grad_clip=global_norm）、使用归一化层和缩放的初始化"
               "（Arch.init=kaiming 或 xavier）"),
    },
    "vanishing_gradients": {
        "en": ("gradients vanish in {count} weight tensor(s) at step {step}: {layers} have a gradient RMS below "
               "{ratio:g} of the largest ({max_param}: {max_rms:.3g})",
               "a too small init or saturated activations: Arch.init=xavier (tanh) or kaiming (ReLU), "
               "normalization layers, ReLU/GELU instead of tanh/sigmoid, residual connections"),
        "zh": ("第 {step} 步有 {count} 个权重张量的梯度消失：{layers} 的梯度均方根低于最大值"
               "（{max_param}：{max_rms:.3g}）的 {ratio:g} 倍",
               "初始化过小或激活饱和：使用 Arch.init=xavier（tanh）或 kaiming（ReLU）、归一化层、"
               "用 ReLU/GELU 代替 tanh/sigmoid、残差连接"),
    },
    "vanishing_activations": {
        "en": ("activations vanish from layer {first} on at step {step}: {count} layer output(s) have an RMS below "
               "{threshold:g}x the input's ({input_rms:.3g}); deepest: {layers}",
               "the init is too small for this depth: Arch.init=xavier for tanh, kaiming for ReLU; add "
               "normalization layers"),
        "zh": ("第 {step} 步从层 {first} 开始激活值消失：{count} 个层输出的均方根低于输入均方根（{input_rms:.3g}）的 "
               "{threshold:g} 倍；最深的：{layers}",
               "对这个深度来说初始化太小：tanh 用 Arch.init=xavier，ReLU 用 kaiming；加入归一化层"),
    },
    "exploding_activations": {
        "en": ("activations explode from layer {first} on at step {step}: {count} layer output(s) have an RMS above "
               "{threshold:g}x the input's ({input_rms:.3g}); largest: {layers}",
               "an init too large or a learning rate too high: Arch.init=kaiming or xavier, normalization layers, "
               "a lower Optimizer.lr"),
        "zh": ("第 {step} 步从层 {first} 开始激活值爆炸：{count} 个层输出的均方根超过输入均方根（{input_rms:.3g}）的 "
               "{threshold:g} 倍；最大的：{layers}",
               "初始化过大或学习率过高：使用 Arch.init=kaiming 或 xavier、归一化层，降低 Optimizer.lr"),
    },
    "dead_relu": {
        "en": ("{count} ReLU layer(s) have more than {threshold:.0%} dead units (zero for the whole batch) at "
               "step {step}: {layers}",
               "lower the learning rate (one large update can kill units for good), use kaiming init, LeakyReLU "
               "or GELU, and check for large negative biases"),
        "zh": ("第 {step} 步有 {count} 个 ReLU 层超过 {threshold:.0%} 的神经元死亡（对整个批次输出都为零）：{layers}",
               "降低学习率（一次过大的更新就可能让神经元永久死亡），使用 kaiming 初始化、LeakyReLU 或 GELU，"
               "并检查是否有很大的负偏置"),
    },
    "targets_not_normalized": {
        "en": ("regression targets are not normalized (mean {target_mean:.4g}, std {target_std:.4g}): the training "
               "loss started at {loss:.4g}, about mean(target^2) = {target_ms:.4g}, and the output layer has to grow "
               "to that scale before anything else is learned, so the loss explodes at a usual learning rate or "
               "crawls at a small one",
               "set Data.normalize_target: true (the default; MAE/RMSE are still reported in target units and the "
               "statistics are written into the run's config.yml), or divide the targets by hand"),
        "zh": ("回归目标未归一化（均值 {target_mean:.4g}，标准差 {target_std:.4g}）：训练损失起始于 {loss:.4g}，约等于 "
               "mean(目标^2) = {target_ms:.4g}；输出层必须先增长到这个量级才能学到别的，因此常用学习率下损失会爆炸，"
               "小学习率下则几乎不动",
               "设置 Data.normalize_target: true（默认值；MAE/RMSE 仍以目标的原始单位报告，统计量会写入运行目录的 "
               "config.yml），或自行缩放目标"),
    },
}

UI = {
    "en": {"severity": {"error": "error", "warn": "warning", "info": "info"},
           "header": "doctor: {n} finding(s): {error} error, {warn} warning, {info} info",
           "none": "doctor: no findings", "where": "step {step}, epoch {epoch}", "where_step": "step {step}",
           "remedy": "remedy: ", "paren": " ({})", "colon": ": "},
    "zh": {"severity": {"error": "错误", "warn": "警告", "info": "提示"},
           "header": "训练诊断：{n} 条发现（错误 {error}，警告 {warn}，提示 {info}）",
           "none": "训练诊断：没有发现问题", "where": "第 {epoch} 轮第 {step} 步", "where_step": "第 {step} 步",
           "remedy": "建议：", "paren": "（{}）", "colon": "："},
}
LANGS = tuple(UI)


def message_fields(template):
    """The ``{field}`` names a message template uses."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def _plain(v):
    """Evidence values as JSON-friendly Python scalars."""
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return int(v)
    return v


@dataclass
class Finding:
    """One thing the doctor noticed: what (id), how bad, when, the numbers, and what to do."""

    id: str
    severity: str
    evidence: dict = field(default_factory=dict)
    step: int = None
    epoch: int = None

    def __post_init__(self):
        if self.id not in MESSAGES:
            raise ValueError(f"unknown finding id {self.id!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        self.evidence = {k: _plain(v) for k, v in self.evidence.items()}

    def _fill(self, template):
        return template.format(**{"step": self.step, "epoch": self.epoch, **self.evidence})

    def message(self, lang="en"):
        return self._fill(MESSAGES[self.id][_lang(lang)][0])

    def remedy(self, lang="en"):
        return self._fill(MESSAGES[self.id][_lang(lang)][1])

    def text(self, lang="en"):
        """``[severity] id (where): message`` and an indented remedy line."""
        ui = UI[_lang(lang)]
        where = ""
        if self.step is not None:
            where = ui["paren"].format((ui["where"] if self.epoch is not None else ui["where_step"]).format(
                step=self.step, epoch=self.epoch))
        return (f"[{ui['severity'][self.severity]}] {self.id}{where}{ui['colon']}{self.message(lang)}\n"
                f"    {ui['remedy']}{self.remedy(lang)}")

    def to_dict(self, lang="en"):
        return {"id": self.id, "severity": self.severity, "step": self.step, "epoch": self.epoch,
                "evidence": dict(self.evidence), "message": self.message(lang), "remedy": self.remedy(lang)}

    @classmethod
    def from_dict(cls, d):
        return cls(d["id"], d["severity"], dict(d.get("evidence") or {}), d.get("step"), d.get("epoch"))


def _lang(lang):
    if lang not in UI:
        raise UserError(f"--lang {lang}: choose one of {', '.join(LANGS)}")
    return lang


def sort_findings(findings):
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (order[f.severity], f.step if f.step is not None else -1, f.id))


def format_report(findings, lang="en"):
    """The findings as console text, most severe first."""
    ui = UI[_lang(lang)]
    if not findings:
        return ui["none"]
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    lines = [ui["header"].format(n=len(findings), **counts)]
    lines += ["  " + f.text(lang).replace("\n", "\n  ") for f in sort_findings(findings)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- series and context

@dataclass
class RunContext:
    """What the rules need to know about the run besides its curves."""

    num_classes: int = 10
    majority_rate: float = None     # share of the largest class in the val set; None = 1 / num_classes
    n_val: int = 0                  # val images (0 = unknown)
    dropout: float = 0.0            # largest dropout probability in the network
    augmentation: bool = False      # random train transforms
    grad_clip: str = None           # value | norm | global_norm | None
    clip_value: float = 1.0
    steps_per_epoch: int = 0        # 0 = unknown
    total_steps: int = 0            # planned training steps (0 = unknown)
    task: str = "classification"    # Global.task
    target_normalized: bool = True  # regression: Data.normalize_target
    target_mean: float = None       # regression: training targets in the units the loss sees
    target_std: float = None
    baseline_loss: float = None     # regression: loss of predicting the training mean (the "chance level")

    @property
    def init_loss(self):
        """Cross-entropy of a uniform prediction, ln(num_classes): the loss expected at init.

        Regression: the loss of predicting the training targets' mean (``baseline_loss``)."""
        if self.task == "regression":
            return float(self.baseline_loss) if self.baseline_loss else 1.0
        return math.log(max(int(self.num_classes), 2))

    @property
    def chance(self):
        return self.majority_rate if self.majority_rate is not None else 1.0 / max(int(self.num_classes), 1)

    def epoch_of(self, step):
        if step is None or not self.steps_per_epoch:
            return None
        return (int(step) - 1) // int(self.steps_per_epoch) + 1

    def to_dict(self):
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class RunSeries:
    """The curves and statistics of one run, as plain Python data.

    train_loss, grad_norm, confidence: lists of (step, value). evals: dicts with step, epoch, loss,
    acc and train_loss (the mean training loss since the previous evaluation). layers: the latest
    sampled layer statistics (name, type, rms, absmax, dead), with layers_step and input_rms.
    grads: the latest sampled per-parameter gradient statistics (name, rms, ndim), with grads_step.
    batch_purity: (step, share of the most common label, batch size) of sampled training batches.
    clip: {samples, clipped}. nonfinite: where the first non-finite value came from, or None.
    finished: the run is over (False while the live doctor watches it).
    """

    train_loss: list = field(default_factory=list)
    evals: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)
    confidence: list = field(default_factory=list)
    batch_purity: list = field(default_factory=list)
    clip: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)
    layers_step: int = None
    input_rms: float = None
    grads: list = field(default_factory=list)
    grads_step: int = None
    nonfinite: dict = None
    finished: bool = True


def interval_mean(train_loss, lo, hi):
    """Mean training loss over steps ``lo < step <= hi`` (finite values only); None if there are none."""
    vals = [v for s, v in train_loss if lo < s <= hi and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def attach_train_means(evals, train_loss):
    """Fill each evaluation's ``train_loss`` (where missing) with the mean since the previous one."""
    prev = 0
    for e in evals:
        if e.get("train_loss") is None:
            e["train_loss"] = interval_mean(train_loss, prev, e["step"])
        prev = e["step"]
    return evals


def ema(values, beta=LOSS_EMA):
    """Bias-corrected exponential moving average."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** i))
    return out


def line_change(values):
    """(absolute, relative) change of the least-squares line over the series.

    Relative to the line's start (to the mean level if that start is <= 0).
    """
    y = np.asarray(values, dtype=np.float64)
    if len(y) < 2:
        return 0.0, 0.0
    x = np.arange(len(y), dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    change = float(slope * (len(y) - 1))
    level = float(intercept) if intercept > 0 else float(np.mean(np.abs(y)))
    return change, (change / level if level > 0 else 0.0)


# ----------------------------------------------------------------------------- rules (pure)

def rule_nonfinite_loss(train_loss, ctx):
    """nan_loss at the first non-finite training loss."""
    for s, v in train_loss:
        if not math.isfinite(v):
            return [Finding("nan_loss", "error", {"loss": str(v)}, s, ctx.epoch_of(s))]
    return []


def rule_nonfinite_source(nonfinite, ctx):
    """What the live doctor found when it replayed the non-finite step (see :func:`locate_nonfinite`)."""
    if not nonfinite:
        return []
    kind, s = nonfinite.get("kind"), nonfinite.get("step")
    ev = {k: v for k, v in nonfinite.items() if k not in ("kind", "step")}
    if kind not in NAN_SOURCES.values():
        return []
    fid = next(k for k, v in NAN_SOURCES.items() if v == kind)
    return [Finding(fid, "error", ev, s, ctx.epoch_of(s))]


def _finite_prefix(train_loss):
    out = []
    for s, v in train_loss:
        if not math.isfinite(v):
            break
        out.append((s, v))
    return out


def rule_divergence(train_loss, ctx):
    """divergence: the smoothed loss > DIVERGE_FACTOR x its best so far and risen by DIVERGE_MIN_RISE x start."""
    pts = _finite_prefix(train_loss)
    if len(pts) < 2:
        return []
    steps = [s for s, _ in pts]
    sm = ema([v for _, v in pts])
    start = sm[0]
    best, best_step = sm[0], steps[0]
    for s, v in zip(steps, sm):
        if v < best:
            best, best_step = v, s
        if v > DIVERGE_FACTOR * best and v - best > DIVERGE_MIN_RISE * abs(start):
            return [Finding("divergence", "error", {"value": v, "best": best, "best_step": best_step,
                                                     "ratio": v / best if best > 0 else float("inf")},
                            s, ctx.epoch_of(s))]
    return []


def rule_oscillation(train_loss, ctx):
    """oscillation: step-to-step noise > OSC_RATIO x the loss level (and > OSC_MIN_NOISE x start) late in the run."""
    pts = _finite_prefix(train_loss)
    n = max(int(len(pts) * OSC_WINDOW_FRACTION), OSC_MIN_STEPS)
    if len(pts) < OSC_MIN_STEPS:
        return []
    window = np.array([v for _, v in pts[-n:]], dtype=np.float64)
    noise = float(np.std(np.diff(window)) / math.sqrt(2))
    level = float(np.median(window))
    start = float(np.mean([v for _, v in pts[:5]]))
    if level > 0 and noise > OSC_RATIO * level and noise > OSC_MIN_NOISE * start:
        s = pts[-1][0]
        return [Finding("oscillation", "warn", {"window": len(window), "noise": noise, "level": level,
                                                 "ratio": noise / level}, s, ctx.epoch_of(s))]
    return []


def _finite_evals(evals):
    return [e for e in evals if e.get("loss") is not None and math.isfinite(e["loss"])]


def rule_plateau(evals, ctx):
    """plateau: neither the val loss nor the task's metric (acc, higher is better; regression: mae,
    lower is better) improved for PLATEAU_EVALS evaluations."""
    ev = _finite_evals(evals)
    if len(ev) <= PLATEAU_EVALS:
        return []
    metric, sign = ("mae", -1.0) if getattr(ctx, "task", "classification") == "regression" else ("acc", 1.0)
    best_loss, best_metric, last_improve = None, None, None
    for i, e in enumerate(ev):
        improved = False
        if best_loss is None or e["loss"] < best_loss * (1 - PLATEAU_MIN_DELTA):
            best_loss, improved = e["loss"], True
        value = e.get(metric)
        if value is not None and (best_metric is None or sign * value > sign * best_metric):
            best_metric, improved = value, True
        if improved:
            last_improve = i
    since = len(ev) - 1 - last_improve
    if since >= PLATEAU_EVALS:
        last = ev[-1]
        return [Finding("plateau", "warn", {"evals": since, "best_loss": best_loss, "metric": metric,
                                             "best_metric": best_metric if best_metric is not None else float("nan"),
                                             "best_step": ev[last_improve]["step"]},
                        last["step"], last.get("epoch"))]
    return []


def _chance_band(ctx):
    p = ctx.chance
    margin = ACC_CHANCE_MIN_MARGIN
    if ctx.n_val:
        margin = max(margin, ACC_CHANCE_SIGMAS * math.sqrt(p * (1 - p) / ctx.n_val))
    return p + margin


def rule_accuracy(evals, ctx):
    """acc_stuck (the same val accuracy, at chance level, ACC_EVALS times) or acc_chance (at chance on average)."""
    # Not within the first epoch: a fresh network often predicts one class for a while.
    ev = [e for e in evals if e.get("acc") is not None and math.isfinite(e["acc"])
          and e["step"] >= (ctx.steps_per_epoch or 0)]
    if len(ev) < ACC_EVALS:
        return []
    last = ev[-ACC_EVALS:]
    accs = [e["acc"] for e in last]
    band = _chance_band(ctx)
    e = last[-1]
    if max(accs) - min(accs) < 1e-9 and accs[-1] <= band:
        return [Finding("acc_stuck", "warn", {"acc": accs[-1], "evals": len(accs), "majority_rate": ctx.chance},
                        e["step"], e.get("epoch"))]
    if float(np.mean(accs)) <= band:
        return [Finding("acc_chance", "warn", {"acc": float(np.mean(accs)), "evals": len(accs),
                                                "majority_rate": ctx.chance}, e["step"], e.get("epoch"))]
    return []


def _state(absolute, relative, ctx):
    """falling / flat / rising from a line's change; tiny absolute moves (a loss near zero) are flat."""
    if abs(absolute) < TREND_MIN_ABS * ctx.init_loss:
        return "flat"
    if relative < -TREND_FLAT:
        return "falling"
    if relative > TREND_FLAT:
        return "rising"
    return "flat"


def rule_loss_patterns(evals, ctx):
    """The train/val loss patterns of issue #3 over the last PATTERN_WINDOW evaluations.

    Train (mean training loss between evaluations) and val loss are each falling, flat or rising
    (line trend beyond +-TREND_FLAT); val also counts as rising when it sits VAL_RISE above an
    earlier best. Then: both falling -> still_learning; train falling, val flat/rising ->
    overfitting; train flat, val falling -> data_problem; both flat -> bottleneck (still high) or
    converged; both rising -> both_rising. Separately: train above val at the end
    (train_above_val) and both poor with strong dropout (dropout_too_strong).
    """
    ev = [e for e in _finite_evals(evals) if e.get("train_loss") is not None and math.isfinite(e["train_loss"])]
    if len(ev) < PATTERN_MIN_EVALS:
        return []
    win = ev[-PATTERN_WINDOW:]
    t = [e["train_loss"] for e in win]
    v = [e["loss"] for e in win]
    (ta, tc), (va, vc) = line_change(t), line_change(v)
    ts, vs = _state(ta, tc, ctx), _state(va, vc, ctx)
    all_v = [e["loss"] for e in ev]
    i_best = int(np.argmin(all_v))
    val_best = all_v[i_best]
    if i_best < len(all_v) - 1 and all_v[-1] > val_best * (1 + VAL_RISE):
        vs = "rising"
    last = ev[-1]
    step, epoch = last["step"], last.get("epoch")
    t_last, v_last = t[-1], v[-1]
    common = {"train_change": tc, "val_change": vc, "evals": len(win), "train_last": t_last, "val_last": v_last}
    out = []
    if ts == "falling" and vs == "falling":
        out.append(Finding("still_learning", "info", common, step, epoch))
    elif ts != "rising" and vs == "rising" and t_last < v_last or ts == "falling" and vs == "flat":
        out.append(Finding("overfitting", "warn" if vs == "rising" else "info",
                           {**common, "val_best": val_best, "val_best_step": ev[i_best]["step"]}, step, epoch))
    elif ts == "flat" and vs == "falling":
        out.append(Finding("data_problem", "warn", common, step, epoch))
    elif ts == "flat" and vs == "flat":
        high = REGRESSION_HIGH_LOSS_FRACTION if ctx.task == "regression" else HIGH_LOSS_FRACTION
        if t_last > high * ctx.init_loss:
            out.append(Finding("bottleneck", "warn", {**common, "init_loss": ctx.init_loss}, step, epoch))
        else:
            out.append(Finding("converged", "info", common, step, epoch))
    elif ts == "rising" and vs == "rising":
        out.append(Finding("both_rising", "error", common, step, epoch))

    if t_last > v_last * (1 + TRAIN_ABOVE_VAL):
        explained = ctx.dropout > 0 or ctx.augmentation or ts == "falling"
        out.append(Finding("train_above_val", "info" if explained else "warn",
                           {"train_last": t_last, "val_last": v_last, "ratio": t_last / v_last - 1 if v_last > 0 else 0.0,
                            "dropout": ctx.dropout, "n_val": ctx.n_val}, step, epoch))
    poor = POOR_LOSS_FRACTION * ctx.init_loss
    if ctx.dropout >= DROPOUT_HIGH and t_last > poor and v_last > poor:
        out.append(Finding("dropout_too_strong", "warn", {"dropout": ctx.dropout, "train_last": t_last,
                                                          "val_last": v_last, "init_loss": ctx.init_loss},
                           step, epoch))
    return out


def rule_confidence(confidence, ctx, last_step=None, finished=True):
    """uniform_confidence: mean top softmax probability near 1/C over the last LATE_FRACTION of the run.

    The run's end is its last step once it is over (``finished``), the planned end while it runs.
    """
    pts = [(s, c) for s, c in confidence if math.isfinite(c)]
    if not pts:
        return []
    end = max(last_step or 0, pts[-1][0])
    if not finished:
        end = max(end, ctx.total_steps or 0)
    start = max(end * (1 - LATE_FRACTION), LATE_MIN_STEP)
    late = [(s, c) for s, c in pts if s >= start]
    if not late:
        return []
    uniform = 1.0 / max(int(ctx.num_classes), 1)
    conf = float(np.mean([c for _, c in late]))
    if conf < uniform + UNIFORM_MARGIN * (1 - uniform):
        s = late[-1][0]
        return [Finding("uniform_confidence", "warn", {"from_step": late[0][0], "confidence": conf,
                                                        "uniform": uniform, "num_classes": int(ctx.num_classes)},
                        s, ctx.epoch_of(s))]
    return []


def rule_gradients(grad_norm, clip, ctx):
    """exploding_gradients (global norm > GRAD_EXPLODE or non-finite) and clipped_often (> CLIP_FRACTION)."""
    out = []
    pts = list(grad_norm)
    finite = [g for _, g in pts if math.isfinite(g)]
    median = float(np.median(finite)) if finite else float("nan")
    for s, g in pts:
        if not math.isfinite(g) or g > GRAD_EXPLODE:
            out.append(Finding("exploding_gradients", "warn", {"norm": g, "median": median}, s, ctx.epoch_of(s)))
            break
    n, k = int(clip.get("samples", 0)), int(clip.get("clipped", 0))
    if ctx.grad_clip and n >= CLIP_MIN_SAMPLES and k / n > CLIP_FRACTION:
        s = pts[-1][0] if pts else None
        out.append(Finding("clipped_often", "warn", {"fraction": k / n, "samples": n, "clip": ctx.grad_clip,
                                                      "clip_value": ctx.clip_value, "median_norm": median},
                           s, ctx.epoch_of(s)))
    return out


def rule_batch_purity(batch_purity, ctx):
    """unshuffled_batches: sampled batches hold mostly one class (class-sorted data, no shuffling)."""
    pts = [(s, p, b) for s, p, b in batch_purity if b >= PURITY_MIN_BATCH]
    if len(pts) < PURITY_MIN_SAMPLES:
        return []
    purity = float(np.mean([p for _, p, _ in pts]))
    expected = ctx.chance
    if purity > expected + PURITY_MARGIN * (1 - expected):
        s = pts[-1][0]
        return [Finding("unshuffled_batches", "warn", {"purity": purity, "samples": len(pts), "expected": expected,
                                                        "batch": float(np.mean([b for _, _, b in pts]))},
                        s, ctx.epoch_of(s))]
    return []


def rule_target_scale(train_loss, ctx):
    """targets_not_normalized: a regression run on raw targets whose RMS exceeds TARGET_RMS_MAX."""
    if ctx.task != "regression" or ctx.target_normalized or ctx.target_mean is None or not train_loss:
        return []
    mean, std = float(ctx.target_mean), float(ctx.target_std or 0.0)
    ms = mean * mean + std * std
    if math.sqrt(ms) <= TARGET_RMS_MAX:
        return []
    s, v = train_loss[0]
    return [Finding("targets_not_normalized", "warn", {"target_mean": mean, "target_std": std, "target_ms": ms,
                                                       "loss": v}, s, ctx.epoch_of(s))]


def _names(items, limit=3):
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit})" if len(items) > limit else "")


def rule_layer_gradients(grads, step, ctx):
    """vanishing_gradients: weight tensors whose gradient RMS < GRAD_VANISH_RATIO x the largest gradient RMS."""
    finite = [g for g in grads if g.get("rms") is not None and math.isfinite(g["rms"])]
    if not finite:
        return []
    top = max(finite, key=lambda g: g["rms"])
    if top["rms"] <= 0:
        return []
    small = [g for g in finite if g.get("ndim", 2) >= 2 and g["rms"] < GRAD_VANISH_RATIO * top["rms"]]
    if not small:
        return []
    return [Finding("vanishing_gradients", "warn", {
        "count": len(small), "layers": _names([f"{g['name']} {g['rms']:.2g}" for g in small]),
        "ratio": GRAD_VANISH_RATIO, "max_param": top["name"], "max_rms": top["rms"]}, step, ctx.epoch_of(step))]


def rule_activations(layers, input_rms, step, ctx):
    """vanishing/exploding_activations (layer output RMS vs the input's) and dead_relu (> DEAD_RELU_FRACTION)."""
    out = []
    ref = input_rms if input_rms and math.isfinite(input_rms) and input_rms > 0 else 1.0
    stats = [l for l in layers if l.get("rms") is not None and math.isfinite(l["rms"])]
    low = [l for l in stats if l["rms"] < ACT_VANISH * ref]
    if low:
        deep = sorted(low, key=lambda l: l["rms"])
        out.append(Finding("vanishing_activations", "warn", {
            "first": low[0]["name"], "rms": low[0]["rms"], "count": len(low), "threshold": ACT_VANISH,
            "input_rms": ref, "layers": _names([f"{l['name']} {l['rms']:.2g}" for l in deep])},
            step, ctx.epoch_of(step)))
    high = [l for l in stats if l["rms"] > ACT_EXPLODE * ref]
    if high:
        big = sorted(high, key=lambda l: -l["rms"])
        out.append(Finding("exploding_activations", "warn", {
            "first": high[0]["name"], "rms": high[0]["rms"], "count": len(high), "threshold": ACT_EXPLODE,
            "input_rms": ref, "layers": _names([f"{l['name']} {l['rms']:.3g}" for l in big])},
            step, ctx.epoch_of(step)))
    dead = [l for l in layers if l.get("dead") is not None and l["dead"] > DEAD_RELU_FRACTION]
    if dead:
        out.append(Finding("dead_relu", "warn", {
            "count": len(dead), "threshold": DEAD_RELU_FRACTION,
            "layers": _names([f"{l['name']} {l['dead']:.0%}" for l in sorted(dead, key=lambda l: -l['dead'])])},
            step, ctx.epoch_of(step)))
    return out


def diagnose(series, ctx):
    """Run every rule on ``series`` (a :class:`RunSeries`); return the findings, most severe first."""
    evals = attach_train_means([dict(e) for e in series.evals], series.train_loss)
    last_step = series.train_loss[-1][0] if series.train_loss else None
    found = []
    found += rule_nonfinite_loss(series.train_loss, ctx)
    found += rule_nonfinite_source(series.nonfinite, ctx)
    found += rule_divergence(series.train_loss, ctx)
    found += rule_oscillation(series.train_loss, ctx)
    found += rule_plateau(evals, ctx)
    found += rule_accuracy(evals, ctx)
    found += rule_loss_patterns(evals, ctx)
    found += rule_confidence(series.confidence, ctx, last_step, series.finished)
    found += rule_gradients(series.grad_norm, series.clip or {}, ctx)
    found += rule_layer_gradients(series.grads, series.grads_step, ctx)
    found += rule_activations(series.layers, series.input_rms, series.layers_step, ctx)
    found += rule_target_scale(series.train_loss, ctx)
    purity = rule_batch_purity(series.batch_purity, ctx)
    if purity:
        # Differential diagnosis: with class-sorted batches the loss jumps at every class change;
        # those jumps are not a learning rate problem, so divergence/oscillation are not reported.
        found = [f for f in found if f.id not in ("divergence", "oscillation")] + purity
    return sort_findings(found)


# ----------------------------------------------------------------------------- live collection

def _first_tensor(x):
    if isinstance(x, paddle.Tensor):
        return x
    if isinstance(x, (list, tuple)):
        for item in x:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def _float_tensors(x):
    if isinstance(x, paddle.Tensor):
        return [x] if x.dtype in (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64) else []
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _float_tensors(item)]
    return []


def _all_finite(tensors):
    return all(bool(paddle.isfinite(t).all()) for t in tensors)


class GradMonitor(ClipGradBase):
    """A gradient "clip" that measures, then delegates to the configured clip (or passes through).

    Installed as the optimizer's ``_grad_clip`` by :class:`Doctor`. On the steps the doctor asks
    for (``doctor.measure_grads``) it computes each gradient's squared L2 norm (the same op
    ``ClipGradByGlobalNorm`` uses), the global norm, whether the inner clip would clip, and on
    layer-sampling steps the per-parameter RMS. On a step whose loss was non-finite it asks the
    doctor to locate the source (the parameters are still those of the forward pass) and returns
    zero gradients: the update is skipped and the weights stay the last good ones.
    """

    def __init__(self, inner, doctor):
        super().__init__()
        self.inner = inner
        self.doctor = doctor
        self.kind, self.limit = None, None
        if isinstance(inner, nn.ClipGradByGlobalNorm):
            self.kind, self.limit = "global_norm", float(inner.clip_norm)
        elif isinstance(inner, nn.ClipGradByNorm):
            self.kind, self.limit = "norm", float(inner.clip_norm)
        elif isinstance(inner, nn.ClipGradByValue):
            self.kind, self.limit = "value", float(inner.max)

    def __str__(self):
        return f"GradMonitor({self.inner})"

    def _measure(self, pg):
        """Record the norms; return False when a gradient or a parameter is non-finite."""
        sq = paddle.stack([_squared_l2_norm(g.astype("float32")).reshape([1]) for _, g in pg]).reshape([-1])
        # Parameters too: one non-finite update between two measurements shows here.
        params_ok = paddle.stack([paddle.isfinite(p).all() for p, _ in pg]).all()
        extra = None
        if self.kind == "value":
            extra = paddle.stack([g.abs().max().astype("float32").reshape([1]) for _, g in pg]).reshape([-1])
        sq = sq.numpy().astype(np.float64)
        norms = np.sqrt(sq)
        total = float(np.sqrt(sq.sum()))
        if not (math.isfinite(total) and bool(params_ok)):
            return False
        clipped = None
        if self.kind == "global_norm":
            clipped = total > self.limit
        elif self.kind == "norm":
            clipped = bool((norms > self.limit).any())
        elif self.kind == "value":
            clipped = bool((extra.numpy() > self.limit).any())
        per_param = None
        if self.doctor.sample_layers_now:
            per_param = [(p, float(n) / math.sqrt(max(int(np.prod(p.shape)), 1))) for (p, _), n in zip(pg, norms)]
        self.doctor.record_grads(total, clipped, per_param)
        return True

    @paddle.no_grad()
    def _dygraph_clip(self, params_grads):
        d = self.doctor
        pg = [(p, g) for p, g in params_grads if g is not None]
        ok = not d.nonfinite_pending
        sync = getattr(d, "sync_flag", None)
        if sync is not None:  # data parallel: every rank skips the (all-reduced) update alike
            ok = not sync(not ok)
        if ok and d.measure_grads and pg:
            ok = self._measure(pg)
        if not ok:
            # The parameters are still those of this step's forward pass: find the source now,
            # then skip the update so the weights in memory stay the last good ones.
            d.locate_now()
            return [(p, paddle.zeros_like(g)) for p, g in pg]
        return self.inner(params_grads) if self.inner is not None else params_grads


def layer_kind(layer):
    return type(layer).__name__


def leaf_layers(network):
    """(name, layer) for every sublayer without sublayers, in registration order."""
    return [(n, l) for n, l in network.named_sublayers() if not l._sub_layers]


@paddle.no_grad()
def _layer_stats(x, kind):
    """[rms, absmax, dead fraction or -1] of a layer output as a float32 tensor (no host sync)."""
    x = x.astype("float32")
    rms = x.square().mean().sqrt()
    absmax = x.abs().max()
    if kind in _RELU_TYPES and x.ndim >= 2:
        axes = [0] + list(range(2, x.ndim)) if x.ndim == 4 else list(range(x.ndim - 1))
        dead = 1.0 - (x > 0).any(axis=axes).astype("float32").mean()
    else:
        dead = paddle.to_tensor(-1.0, dtype="float32")
    return paddle.stack([rms.reshape([]), absmax.reshape([]), dead.reshape([])])


def _buffers_snapshot(network):
    return [(b, b.clone()) for b in network.buffers() if b is not None]


@paddle.no_grad()
def locate_nonfinite(network, inputs, loss_value=None):
    """Where the first non-finite value of a forward pass comes from.

    Checks, in order: the input batch; the parameters; then replays ``inputs`` through
    ``network`` (same mode, buffers such as BatchNorm's running statistics restored afterwards)
    with a post-hook on every sublayer and returns the first layer, in call order, whose output
    is non-finite: ``layer`` when its inputs were finite, ``op`` when they already were not
    (a functional op in the caller made them). All outputs finite -> ``loss``.

    Returns a dict with ``kind`` (input | weights | layer | op | loss | unknown) and evidence.
    """
    tensors = _float_tensors(list(inputs) if isinstance(inputs, (list, tuple)) else [inputs])
    for t in tensors:
        bad = int((~paddle.isfinite(t)).astype("int64").sum())
        if bad:
            return {"kind": "input", "count": bad, "fraction": bad / max(int(np.prod(t.shape)), 1)}
    for name, p in network.named_parameters():
        if not bool(paddle.isfinite(p).all()):
            return {"kind": "weights", "param": name}
    found = {}
    names = {id(l): n for n, l in network.named_sublayers()}

    def hook(layer, ins, out):
        if found:
            return
        outs = _float_tensors(out)
        if outs and not _all_finite(outs):
            ins_t = _float_tensors(list(ins))
            w = [p for p in layer.parameters()]
            found.update({
                "kind": "layer" if _all_finite(ins_t) else "op", "layer": names.get(id(layer), "?"),
                "type": layer_kind(layer),
                "input_absmax": max([float(t.abs().max()) for t in ins_t if bool(paddle.isfinite(t).all())] or [0.0]),
                "weight_absmax": max([float(p.abs().max()) for p in w] or [0.0])})

    handles = [l.register_forward_post_hook(hook) for _, l in network.named_sublayers()]
    saved = _buffers_snapshot(network)
    try:
        out = network(*inputs) if isinstance(inputs, (list, tuple)) else network(inputs)
    finally:
        for h in handles:
            h.remove()
        for b, v in saved:
            b.set_value(v)
    if found:
        return found
    outs = _float_tensors(out)
    if outs and _all_finite(outs):
        return {"kind": "loss", "loss": str(loss_value)}
    return {"kind": "unknown"}


class Doctor(Callback):
    """The live training doctor (a hapi callback and a :class:`~utils.training.callbacks.PeriodicEval` listener).

    Args:
        progress: the run's :class:`~utils.training.callbacks.Progress` (global step and epoch).
        context: a :class:`RunContext`.
        run_dir: where ``diagnosis.json`` goes (None: not written).
        writer: a VisualDL ``LogWriter`` for ``doctor/*`` scalars and the report text (or None).
        print_fn: console output.
        lang: ``en`` or ``zh`` for what is printed and written.
        sample_every: per-layer activation and gradient statistics every N steps (and at the first and
            last step).
        grad_every: global gradient norm (and clipping) every N steps.
        verbose: 0 prints only warnings and errors; 1 also the informational findings at the end.
        sync_flag: data parallel: ``flag -> flag on any rank`` (``utils.addons.distributed.any_rank``). A NaN
            input or loss is seen by one rank but the gradients are averaged over all: every rank
            must skip the update of that step, or the ranks' weights part.

    Hooks only route; :meth:`diagnose` decides (the pure rules over what was collected).
    """

    def __init__(self, progress, context, run_dir=None, writer=None, print_fn=print, lang="en",
                 sample_every=50, grad_every=10, verbose=1, sync_flag=None):
        super().__init__()
        self.sync_flag = sync_flag
        if lang not in UI:
            raise UserError(f"Doctor.lang: {lang!r} is not one of {list(UI)}")
        check_int("Doctor.sample_every", sample_every, 1)
        check_int("Doctor.grad_every", grad_every, 1)
        self.progress = progress
        self.context = context
        self.run_dir = run_dir
        self.writer = writer
        self.print = print_fn
        self.lang = lang
        self.sample_every = sample_every
        self.grad_every = grad_every
        self.verbose = verbose
        self.shown = SEVERITIES if verbose else ("error", "warn")
        self.series = RunSeries(clip={"samples": 0, "clipped": 0}, finished=False)
        self.reported = set()
        self.findings = []
        # per-step state
        self.sample_layers_now = False
        self.measure_grads = False
        self.nonfinite_pending = False
        self._last_inputs = None
        self._last_loss = None
        self._handles = []
        self._layer_handles = []
        self._layer_out = []
        self._monitor = None
        self._names = {}
        self._confidence = None
        self._input_rms = None
        self._replaying = False
        self.stop_reason = None

    # -- wiring
    def on_train_begin(self, logs=None):
        net = self.model.network
        self._names = {p.name: n for n, p in net.named_parameters()}
        self._handles = [net.register_forward_pre_hook(self._keep_inputs),
                         net.register_forward_post_hook(self._network_output)]
        loss = getattr(self.model, "_loss", None)
        if isinstance(loss, nn.Layer):
            self._handles.append(loss.register_forward_post_hook(self._check_loss))
        opt = self.model._optimizer
        if opt is not None and not isinstance(opt._grad_clip, GradMonitor):
            self._monitor = GradMonitor(opt._grad_clip, self)
            opt._grad_clip = self._monitor

    def _unwire(self):
        for h in self._handles + self._layer_handles:
            h.remove()
        self._handles, self._layer_handles = [], []
        opt = getattr(self.model, "_optimizer", None) if self.model is not None else None
        if self._monitor is not None and opt is not None and opt._grad_clip is self._monitor:
            opt._grad_clip = self._monitor.inner
        self._monitor = None

    def _keep_inputs(self, layer, inputs):
        if not layer.training or self._replaying:
            return  # validation passes go through the same network
        self._last_inputs = inputs  # a reference only: the batch is alive anyway
        x = _first_tensor(inputs)
        if x is None or x.dtype not in (paddle.float32, paddle.float64, paddle.float16, paddle.bfloat16):
            return
        # One reduction per step: a NaN pixel can vanish behind a ReLU (relu(NaN) = 0 in Paddle)
        # and leave the loss finite while the gradients poison the first layer's weights.
        if not bool(paddle.isfinite(x).all()):
            self.nonfinite_pending = True
        if self.sample_layers_now:
            self._input_rms = x.astype("float32").square().mean().sqrt()

    def _network_output(self, layer, inputs, output):
        if self.sample_layers_now and layer.training and not self._replaying and self.context.task != "regression":
            logits = _first_tensor(output)
            if logits is not None and logits.ndim == 2:
                with paddle.no_grad():
                    self._confidence = paddle.nn.functional.softmax(logits.astype("float32"), axis=-1).max(axis=-1).mean()

    def _check_loss(self, layer, inputs, output):
        t = _first_tensor(output)
        if t is None:
            return
        v = float(t) if t.size == 1 else float(t.sum())
        self._last_loss = v
        if not math.isfinite(v):
            self.nonfinite_pending = True
        if self.measure_grads and len(inputs) >= 2 and isinstance(inputs[-1], paddle.Tensor):
            labels = inputs[-1].numpy().reshape(-1)
            if labels.size and np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0:
                share = float(np.bincount(labels).max() / labels.size)
                self.series.batch_purity.append((self.progress.global_step + 1, share, int(labels.size)))

    def _layer_hook(self, name):
        def hook(layer, inputs, output):
            x = _first_tensor(output)
            if x is not None and not self._replaying and x.dtype in (paddle.float32, paddle.float64, paddle.float16, paddle.bfloat16):
                k = layer_kind(layer)
                self._layer_out.append((name, k, _layer_stats(x, k)))
        return hook

    # -- the step
    def on_train_batch_begin(self, step, logs=None):
        s = self.progress.global_step + 1
        self.sample_layers_now = s == 1 or s % self.sample_every == 0 or s == self.context.total_steps
        self.measure_grads = self.sample_layers_now or s % self.grad_every == 0
        self._confidence = self._input_rms = None
        if self.sample_layers_now:
            self._layer_out = []
            for name, layer in leaf_layers(self.model.network):
                self._layer_handles.append(layer.register_forward_post_hook(self._layer_hook(name)))

    def on_train_batch_end(self, step, logs=None):
        s = self.progress.global_step
        for h in self._layer_handles:
            h.remove()
        self._layer_handles = []
        loss = logs.get("loss") if logs else None
        if loss is not None:
            self.series.train_loss.append((s, float(np.asarray(loss).reshape(-1)[0])))
        if self.sample_layers_now:
            self._collect_layers(s)
        self.sample_layers_now = self.measure_grads = False
        self.nonfinite_pending = False
        bad_loss = bool(self.series.train_loss) and not math.isfinite(self.series.train_loss[-1][1])
        new_event = self.series.nonfinite is not None and self.series.nonfinite.get("step") == s
        if (bad_loss or new_event) and self.stop_reason is None:
            self.stop(s)

    def stop(self, s):
        """Stop the run after this step: a non-finite loss, input, gradient or weight."""
        from utils.training.callbacks import request_stop

        request_stop(self.model)
        self.report_new(("error",))
        order = [*NAN_SOURCES, "nan_loss"]
        nan = sorted((f for f in self.findings if f.id in order), key=lambda f: order.index(f.id))
        self.stop_reason = (f"doctor: {nan[0].message('en')}" if nan else f"doctor: non-finite values at step {s}")
        self.write()

    def _collect_layers(self, s):
        rows, counts = [], {}
        if self._layer_out:
            vals = paddle.stack([t for _, _, t in self._layer_out]).numpy()
            for (name, kind, _), (rms, absmax, dead) in zip(self._layer_out, vals):
                counts[name] = counts.get(name, 0) + 1
                label = name if counts[name] == 1 else f"{name}[{counts[name]}]"
                rows.append({"name": label, "type": kind, "rms": float(rms), "absmax": float(absmax),
                             "dead": None if dead < 0 else float(dead)})
        self._layer_out = []
        self.series.layers, self.series.layers_step = rows, s
        if self._input_rms is not None:
            self.series.input_rms = float(self._input_rms)
        if self._confidence is not None:
            c = float(self._confidence)
            self.series.confidence.append((s, c))
            if self.writer is not None:
                self.writer.add_scalar("doctor/confidence", c, s)

    def record_grads(self, total, clipped, per_param):
        """Called by :class:`GradMonitor` with the measured global norm of the current step."""
        s = self.progress.global_step + 1  # the step in progress
        self.series.grad_norm.append((s, total))
        if clipped is not None:
            self.series.clip["samples"] += 1
            self.series.clip["clipped"] += int(clipped)
        if per_param is not None:
            self.series.grads = [{"name": self._names.get(p.name, p.name), "rms": rms, "ndim": len(p.shape)}
                                 for p, rms in per_param]
            self.series.grads_step = s
        if self.writer is not None and math.isfinite(total):
            self.writer.add_scalar("doctor/grad_norm", total, s)

    def locate_now(self):
        """Called by :class:`GradMonitor` inside the non-finite step, before the update."""
        s = self.progress.global_step + 1
        if self.series.nonfinite is not None:
            return  # the first source is the one that matters
        self._replaying = True
        try:
            where = locate_nonfinite(self.model.network, self._last_inputs or (), self._last_loss)
        except Exception as e:  # the diagnosis must never take the run down
            where = {"kind": "unknown", "error": f"{type(e).__name__}: {e}"}
        finally:
            self._replaying = False
        where["step"] = s
        self.series.nonfinite = where
        self.nonfinite_pending = False

    def on_eval_end(self, logs=None):
        e = {"step": int(logs["step"]), "epoch": logs.get("epoch"), "loss": float(logs["loss"]),
             "acc": float(logs["acc"]) if "acc" in logs else None}
        prev = self.series.evals[-1]["step"] if self.series.evals else 0
        recent = []
        for st, v in reversed(self.series.train_loss):  # the steps since the previous evaluation
            if st <= prev:
                break
            recent.append((st, v))
        e["train_loss"] = interval_mean(recent, prev, e["step"])
        self.series.evals.append(e)
        self.report_new(("error", "warn"))
        self.write()

    def on_train_end(self, logs=None):
        self._unwire()
        self.series.finished = True
        self.findings = self.diagnose()
        shown = [f for f in self.findings if f.severity in self.shown]
        if shown or self.verbose:
            self.print(format_report(shown, self.lang))
        self.write()
        if self.writer is not None:
            text = format_report(self.findings, self.lang)
            self.writer.add_text("doctor/diagnosis", text, step=max(self.progress.global_step, 0))

    # -- decisions and output
    def diagnose(self):
        """The findings so far: every rule over what has been collected."""
        return diagnose(self.series, self.context)

    def report_new(self, severities):
        """Print the findings of these severities not printed before; return them."""
        self.findings = self.diagnose()
        new = [f for f in self.findings if f.severity in severities and f.severity in self.shown
               and f.id not in self.reported]
        for f in new:
            self.reported.add(f.id)
            self.print("doctor: " + f.text(self.lang))
        return new

    def report(self):
        """diagnosis.json's content."""
        return diagnosis_dict(self.findings, self.lang, self.context, self.series)

    def write(self):
        if self.run_dir:
            from utils.training.checkpoint import save_json

            save_json(self.report(), os.path.join(self.run_dir, "diagnosis.json"))

    def state_dict(self):
        return {"evals": [dict(e) for e in self.series.evals], "reported": sorted(self.reported),
                "clip": dict(self.series.clip)}

    def load_state_dict(self, state):
        self.series.evals = [dict(e) for e in state.get("evals", [])]
        self.reported = set(state.get("reported", []))
        self.series.clip = dict(state.get("clip") or {"samples": 0, "clipped": 0})


def _series_stats(series):
    """The parts of a RunSeries that only the live doctor can measure, for diagnosis.json."""
    return {"grad_norm": [[s, v] for s, v in series.grad_norm], "confidence": [[s, v] for s, v in series.confidence],
            "batch_purity": [list(p) for p in series.batch_purity],
            "clip": series.clip, "layers": series.layers, "layers_step": series.layers_step,
            "input_rms": series.input_rms, "grads": series.grads, "grads_step": series.grads_step,
            "nonfinite": series.nonfinite, "evals": series.evals}


def diagnosis_dict(findings, lang, context, series=None):
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    out = {"lang": lang, "counts": counts, "findings": [f.to_dict(lang) for f in sort_findings(findings)],
           "context": context.to_dict()}
    if series is not None:
        out["stats"] = _series_stats(series)
    return out


def _max_dropout(network):
    ps = [float(l.p) for l in network.sublayers() if isinstance(l, nn.Dropout) and isinstance(l.p, (int, float))]
    return max(ps, default=0.0)


RANDOM_OPS = ("RandomCrop", "RandomHorizontalFlip", "RandomResizedCrop", "RandomRotation", "ColorJitter")


def _has_augmentation(ops):
    names = [next(iter(op)) if isinstance(op, dict) else str(op) for op in ops or []]
    return any(n.startswith("Random") or n in RANDOM_OPS for n in names)


def run_context(cfg, bundle=None, network=None, steps_per_epoch=0):
    """A :class:`RunContext` from the resolved config (and the data and network when at hand)."""
    num_classes = (bundle.num_classes if bundle is not None else cfg["Data"].get("num_classes")) or 10
    majority, n_val = None, 0
    ds = getattr(bundle, "val", None) if bundle is not None else None
    if ds is not None and getattr(ds, "labels", None) is not None and len(ds.labels):
        counts = np.bincount(np.asarray(ds.labels, dtype=np.int64))
        majority, n_val = float(counts.max() / counts.sum()), int(counts.sum())
    dropout = _max_dropout(network) if network is not None else float(cfg.get("Arch", {}).get("dropout") or 0.0)
    o = cfg.get("Optimizer", {})
    epochs = int(cfg.get("Global", {}).get("epochs") or 0)
    ctx = RunContext(num_classes=int(num_classes), majority_rate=majority, n_val=n_val, dropout=dropout,
                     augmentation=_has_augmentation(cfg.get("Transforms", {}).get("train")),
                     grad_clip=o.get("grad_clip"), clip_value=float(o.get("clip_value") or 1.0),
                     steps_per_epoch=int(steps_per_epoch), total_steps=int(steps_per_epoch) * epochs)
    if cfg.get("Global", {}).get("task") == "regression":
        ctx.task, ctx.majority_rate = "regression", None
        ctx.target_normalized = bool(cfg.get("Data", {}).get("normalize_target", True))
        train = getattr(bundle, "train", None) if bundle is not None else None
        if train is not None and getattr(train, "targets", None) is not None and len(train.targets):
            from utils.training.optim import regression_loss_np

            # the targets as the loss sees them (normalized or not)
            y = (np.asarray(train.targets, np.float64) - train.target_mean) / train.target_std
            ctx.target_mean, ctx.target_std = float(y.mean()), float(y.std())
            ctx.baseline_loss = float(regression_loss_np(np.full_like(y, y.mean()), y,
                                                         cfg.get("Loss", {}).get("name", "mse")).mean())
            ctx.n_val = len(bundle.val) if getattr(bundle, "val", None) is not None else 0
    return ctx


def build_doctor(cfg, bundle, network, progress, steps_per_epoch, run_dir=None, writer=None, print_fn=print,
                 sync_flag=None):
    """The :class:`Doctor` of the ``Doctor`` config section for this run."""
    d = cfg["Doctor"]
    return Doctor(progress, run_context(cfg, bundle, network, steps_per_epoch), run_dir, writer, print_fn,
                  d["lang"], d["sample_every"], d["grad_every"], int(cfg["Global"]["verbose"]), sync_flag)


# ----------------------------------------------------------------------------- offline

def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read_vdl(run_dir):
    """{tag: [(step, value)]} of the run's VisualDL scalars (the newest log file); {} without one."""
    from utils.training.vdl import log_files, read_scalars

    logs = log_files(run_dir)
    try:
        return read_scalars(logs[-1:])
    except Exception:  # a log cut off mid-record by a crash: use what the other files give
        return {}


def load_run(run_dir):
    """(RunSeries, RunContext, sources) rebuilt from a run directory; UserError if it is not one."""
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir}: not a directory (pass a run directory such as output/gmlp_digits/<timestamp>)")
    metrics = _read_json(os.path.join(run_dir, "metrics.json"))
    diag = _read_json(os.path.join(run_dir, "diagnosis.json"))
    cfg = None
    cfg_path = os.path.join(run_dir, "config.yml")
    if os.path.isfile(cfg_path):
        import yaml

        try:
            with open(cfg_path, encoding="utf-8") as f:
                cfg = yaml.safe_load(f) or None
        except (OSError, yaml.YAMLError):
            cfg = None
    scalars = _read_vdl(run_dir)
    sources = [name for name, have in (("metrics.json", metrics), ("diagnosis.json", diag), ("config.yml", cfg),
                                       ("VisualDL log", scalars)) if have]
    if not (metrics or diag or scalars):
        raise UserError(f"{run_dir}: no metrics.json, diagnosis.json or VisualDL log here: not a run directory "
                        f"(pass one such as output/gmlp_digits/<timestamp>)")

    if diag and diag.get("context"):
        known = RunContext.__dataclass_fields__
        ctx = RunContext(**{k: v for k, v in diag["context"].items() if k in known})
    elif cfg:
        ctx = run_context(cfg)
    else:
        ctx = RunContext()
    stats = (diag or {}).get("stats") or {}
    series = RunSeries(clip=stats.get("clip") or {})
    series.train_loss = scalars.get("train/loss", [])
    if stats.get("evals"):  # the live doctor's: they keep the train loss mean even without a VisualDL log
        series.evals = [dict(e) for e in stats["evals"]]
    elif metrics and metrics.get("history"):
        series.evals = [{"step": h["step"], "epoch": h.get("epoch"), "loss": h.get("loss"), "acc": h.get("acc")}
                        for h in metrics["history"]]
    elif "eval/loss" in scalars:
        acc = dict(scalars.get("eval/acc", []))
        series.evals = [{"step": s, "epoch": ctx.epoch_of(s), "loss": v, "acc": acc.get(s)}
                        for s, v in scalars["eval/loss"]]
    series.grad_norm = scalars.get("doctor/grad_norm") or [tuple(p) for p in stats.get("grad_norm", [])]
    series.confidence = scalars.get("doctor/confidence") or [tuple(p) for p in stats.get("confidence", [])]
    series.batch_purity = [tuple(p) for p in stats.get("batch_purity", [])]
    series.layers, series.layers_step = stats.get("layers") or [], stats.get("layers_step")
    series.input_rms = stats.get("input_rms")
    series.grads, series.grads_step = stats.get("grads") or [], stats.get("grads_step")
    series.nonfinite = stats.get("nonfinite")
    if not ctx.total_steps and metrics and metrics.get("global_step"):
        ctx.total_steps = int(metrics["global_step"])
    return series, ctx, sources


def diagnose_run(run_dir, lang="en"):
    """Diagnose a finished or crashed run directory offline; returns the report dict.

    The findings come from re-running the rules on ``metrics.json`` (evaluation history), the
    VisualDL log (training loss per step, gradient norm, confidence) and the statistics the live
    doctor stored in ``diagnosis.json`` (per-layer, clipping, the non-finite source); any of them
    may be missing. ``report['text']`` is the console rendering in ``lang``.
    """
    _lang(lang)
    series, ctx, sources = load_run(run_dir)
    findings = diagnose(series, ctx)
    if not series.train_loss:
        # No per-step loss (VisualDL was off): keep what the live doctor found from it.
        diag = _read_json(os.path.join(run_dir, "diagnosis.json")) or {}
        findings = sort_findings(findings + [Finding.from_dict(f) for f in diag.get("findings", [])
                                             if f.get("id") in STEP_RULES])
    out = diagnosis_dict(findings, lang, ctx)
    out.update(run_dir=run_dir, sources=sources, text=format_report(findings, lang))
    return out
