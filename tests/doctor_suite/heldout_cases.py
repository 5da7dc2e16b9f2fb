"""The held-out set: the last third, written from the literature without looking at how the doctor
handles them, and scored once (see run.py). Do not tune the doctor against these.
"""
from __future__ import annotations

from tests.doctor_suite import builders as B
from tests.doctor_suite.causes import Case

MLP = "configs/mlp_digits.yml"
CNN = "configs/cnn_digits.yml"
QUICK = ("Global.epochs=8",)
CONV = ("Global.epochs=4", "Data.fraction=0.3")

CASES = [
    Case("class3_labelled_5", MLP, QUICK, "labels_wrong",
         "train_list.txt maps digit 3 to label 5 (label map off by one entry); val_list.txt right",
         B.class_relabelled),
    Case("val_copied_from_train", MLP, QUICK, "train_val_overlap", "val/ folders copied from train/",
         B.val_overlaps_train),
    Case("pixels_0_255", MLP, (*QUICK, "Transforms.mean=[0.0]", "Transforms.std=[0.00392]"), "unnormalized_inputs",
         "Normalize std 1/255 with mean 0: the network sees raw 0..255 pixels"),
    # Replaces "Transforms.std=[100]" (std in pixel units), which the config refuses at load time
    # (values are in [0,1] units): a mistake the template does not let a user make.
    Case("train_without_normalize", CNN, (*CONV, "Transforms.train=[]"), "preprocessing_mismatch",
         "Normalize dropped from Transforms.train but kept in Transforms.eval"),
    Case("bn_after_head", CNN, QUICK, "batchnorm_after_head", "user MLP with BatchNorm1D after the classifier",
         B.user_model("user_head_then_bn")),
    Case("dead_branch", CNN, QUICK, "dead_branch", "user two-branch MLP whose second branch is multiplied by 0",
         B.user_model("user_dead_branch")),
    Case("deep_sigmoid", CNN, QUICK, "saturating_activations", "user MLP of 10 sigmoid layers, no normalization",
         B.user_model("user_deep_sigmoid")),
    Case("googlenet_lr_3", "configs/googlenet_digits.yml", (*CONV, "Optimizer.lr=3"), "lr_too_high",
         "GoogLeNet with SGD-momentum at lr 3", slow=True),
    Case("resnet_wd_0.5", "configs/resnet20_digits.yml", (*CONV, "Optimizer.weight_decay=0.5"),
         "weight_decay_too_high", "ResNet-20 with L2 weight decay 0.5", slow=True),
    Case("mlp_init_1e-4_deep", MLP, (*QUICK, "Arch.hidden=[64,64,64,64,64,64]", "Arch.init=normal",
                                     "Arch.init_std=1e-4"), "init_too_small",
         "6 hidden layers, normal init with std 1e-4"),
    Case("csv_targets_shuffled", "configs/mlp_diabetes.yml", ("Global.epochs=15",), "labels_wrong",
         "the CSV's target column pasted in another row order", B.csv_targets_shifted),
    Case("cnn_lr_1e-5", CNN, (*CONV, "Optimizer.lr=1e-5"), "lr_too_low", "SGD-momentum at lr 1e-5 on the CNN"),
    Case("cnn_sa_one_epoch", "configs/cnn_sa_digits.yml", ("Global.epochs=2", "Data.fraction=0.3"), "too_few_epochs",
         "cnn_sa stopped after 2 epochs (shipped: 20)"),
]
