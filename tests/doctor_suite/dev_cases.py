"""The development set: two thirds of the cases, the ones a doctor change may be tuned against.

Sources of the mistakes: the template's seed articles (../shared/seeds/: LR symptoms, init,
regularization, shuffling, NaN, train/val patterns), Google's deep learning tuning playbook and
Karpathy's "A recipe for training neural networks" (softmax before the loss, a ReLU on the logits,
forgotten shuffle, labels decoupled from inputs, overfit-a-batch thinking).
"""
from __future__ import annotations

from tests.doctor_suite import builders as B
from tests.doctor_suite.causes import Case

MLP = "configs/mlp_digits.yml"
CNN = "configs/cnn_digits.yml"   # user models use it: its Arch section has only `name`
QUICK = ("Global.epochs=8",)      # mlp_digits: ~0.4 s an epoch on one thread
CONV = ("Global.epochs=4", "Data.fraction=0.3")  # conv families: ~1 s an epoch on 30% of digits

CASES = [
    Case("lr_10_mlp", MLP, (*QUICK, "Optimizer.lr=10"), "lr_too_high", "Adam at lr 10 instead of 1e-3"),
    Case("lr_5_cnn", CNN, (*CONV, "Optimizer.lr=5"), "lr_too_high", "SGD-momentum at lr 5 on the CNN"),
    Case("lr_1e-6_mlp", MLP, (*QUICK, "Optimizer.lr=1e-6"), "lr_too_low", "Adam at lr 1e-6"),
    Case("wd_1_mlp", MLP, (*QUICK, "Optimizer.weight_decay=1.0"), "weight_decay_too_high",
         "L2 weight decay 1.0 (typical 1e-4..5e-4)"),
    Case("lr_step_decay_epoch1", MLP, (*QUICK, "LRScheduler.name=step", "LRScheduler.step_size=1",
                                       "LRScheduler.gamma=0.001"), "lr_decayed_too_early",
         "step schedule dividing the LR by 1000 after every epoch: ~0 from epoch 2"),
    Case("label_smoothing_0.9", MLP, (*QUICK, "Loss.label_smoothing=0.9"), "label_smoothing_too_high",
         "label smoothing 0.9 (typical 0.1)"),
    Case("bn_batch2_resnet", "configs/resnet20_digits.yml", ("Global.epochs=3", "Data.fraction=0.1",
                                                             "DataLoader.batch_size=2"),
         "batchnorm_tiny_batch", "ResNet-20 (BatchNorm) with batch size 2", slow=True),
    Case("dropout_0.9_mlp", MLP, (*QUICK, "Arch.dropout=0.9"), "dropout_too_high", "dropout 0.9 after each hidden layer"),
    Case("fraction_3pct", MLP, ("Global.epochs=30", "Data.fraction=0.03", "Arch.dropout=0.0"), "too_little_data",
         "3% of the training set (~43 images), no dropout, 30 epochs"),
    Case("sorted_no_shuffle", MLP, QUICK, "unshuffled_data", "train_list.txt sorted by class, DataLoader.shuffle=false",
         B.sorted_unshuffled),
    Case("grad_clip_1e-4", MLP, (*QUICK, "Optimizer.name=Momentum", "Optimizer.lr=0.05",
                                 "Optimizer.grad_clip=global_norm", "Optimizer.clip_value=1e-4"),
         "grad_clip_too_tight", "SGD with global-norm clipping at 1e-4"),
    Case("init_std_3", MLP, (*QUICK, "Arch.init=normal", "Arch.init_std=3"), "init_too_large",
         "normal init with std 3 (typical 0.02 or kaiming)"),
    # FineTune.freeze=['*'] is refused at build time (zero trainable parameters); leaving one bias
    # trainable gets past that check and learns as little.
    Case("freeze_all_but_bias", MLP, (*QUICK, "FineTune.freeze=['body','head.weight']"), "frozen_model",
         "FineTune.freeze [body, head.weight]: only the head's 10 biases train"),
    Case("labels_permuted", MLP, QUICK, "labels_wrong", "train_list.txt labels permuted against the images",
         B.labels_permuted),
    Case("constant_images", MLP, QUICK, "no_signal_inputs", "class folders of flat grey images", B.constant_images),
    Case("csv_nan_cell", "configs/mlp_diabetes.yml", ("Global.epochs=10",), "nan_in_data",
         "a regression CSV with one empty cell", B.csv_missing_cell),
    Case("softmax_head", CNN, QUICK, "softmax_before_loss", "user MLP ending in softmax, fed to CrossEntropy",
         B.user_model("user_softmax_mlp")),
    Case("all_linear", CNN, QUICK, "no_nonlinearity", "user MLP with no activation between its Linear layers",
         B.user_model("user_linear_mlp")),
    Case("relu_on_logits", CNN, QUICK, "relu_before_logits", "user MLP with a ReLU after the last Linear",
         B.user_model("user_relu_logits")),
    Case("diabetes_lr_3", "configs/mlp_diabetes.yml", ("Global.epochs=15", "Optimizer.lr=3"), "lr_too_high",
         "Adam at lr 3 on the regression MLP"),
    Case("diabetes_raw_targets", "configs/mlp_diabetes.yml", ("Global.epochs=15", "Data.normalize_target=false"),
         "targets_not_normalized", "regression targets 25..346 fed raw"),
    Case("gmlp_lr_0.5", "configs/gmlp_digits.yml", (*CONV, "Optimizer.lr=0.5"), "lr_too_high",
         "gMLP with AdamW at lr 0.5 (shipped 2e-3)", slow=True),
]
