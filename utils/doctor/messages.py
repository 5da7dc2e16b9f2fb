"""What the doctor says: every finding's message and remedy, in English and Chinese, and the report's frame.

One table, :data:`MESSAGES`, keyed by finding id, so that a finding's two languages sit side by
side and a test can check that both use the same fields. :data:`UI` holds the words around the
findings (severity names, the header, "remedy:").
"""
from __future__ import annotations

import string

from utils.errors import UserError

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
    "below_chance": {
        "en": ("val accuracy is below chance: {acc:.4f} on average over the last {evals} evaluations, vs {chance:.4f} "
               "for guessing on this balanced val set ({n_val} images; more than {margin:.4f} under it): the "
               "predictions are systematically wrong, not random",
               "the labels do not match: train and val use a different class order (check labels.txt / the class "
               "folders of both), or the label list is shifted against the images"),
        "zh": ("验证准确率低于随机水平：最近 {evals} 次评估平均为 {acc:.4f}，而在这个类别均衡的验证集（{n_val} 张图片）上"
               "随机猜测为 {chance:.4f}（低了超过 {margin:.4f}）：预测是系统性地错，而不是随机",
               "标签对不上：训练集和验证集的类别顺序不同（检查两者的 labels.txt 或类别文件夹），或标签列表相对图片错位"),
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
           "remedy": "remedy: ", "paren": " ({})", "colon": ": ",
           "set_aside": "set aside: its learning-rate advice conflicts with {other}'s, which is better supported "
                        "({why}); follow {other} first. To tell them apart, run an LR range test (tools/lr_find.py)",
           "why_severity": "it is more severe",
           "why_direct": "a too-high learning rate shows directly in the loss and gradients, a too-low one is inferred",
           "replaced": " [printed during the run; at the end replaced by {other}]",
           "resolved": " [printed during the run; no longer holds at the end]",
           "earlier": "doctor: printed during the run, no longer holding at the end:"},
    "zh": {"severity": {"error": "错误", "warn": "警告", "info": "提示"},
           "header": "训练诊断：{n} 条发现（错误 {error}，警告 {warn}，提示 {info}）",
           "none": "训练诊断：没有发现问题", "where": "第 {epoch} 轮第 {step} 步", "where_step": "第 {step} 步",
           "remedy": "建议：", "paren": "（{}）", "colon": "：",
           "set_aside": "暂不采纳：其学习率建议与 {other} 的相反，而 {other} 的依据更充分（{why}）；请先按 {other} 处理。"
                        "若要区分两者，请做一次学习率范围测试（tools/lr_find.py）",
           "why_severity": "它更严重",
           "why_direct": "学习率过大会直接体现在损失和梯度上，过小只能间接推断",
           "replaced": " [训练中曾输出；结束时已被 {other} 取代]",
           "resolved": " [训练中曾输出；结束时已不再成立]",
           "earlier": "训练诊断：训练中曾输出、结束时已不再成立的发现："},
}
LANGS = tuple(UI)


def message_fields(template: str) -> set[str]:
    """The ``{field}`` names a message template uses."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def check_lang(lang: str) -> str:
    """``lang`` if the doctor speaks it; UserError naming the choices otherwise."""
    if lang not in UI:
        raise UserError(f"--lang {lang}: choose one of {', '.join(LANGS)}")
    return lang
