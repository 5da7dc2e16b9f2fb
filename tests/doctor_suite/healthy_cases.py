"""Healthy runs: shipped digits-sized configs to their normal end; none may end with a WARN or ERROR.

The conv families' normal ends take 40-100 s on one thread, so they run as fast variants (fewer
epochs, 30% of the training images) and are marked slow; ``*_full`` cases run to the normal end.
"""
from __future__ import annotations

import os

from tests.doctor_suite.causes import Case

FAST = ("Global.epochs=6", "Data.fraction=0.3")


def pretrained(root: str) -> list[str]:
    """finetune_digits needs finetune_digits_pretrain's weights: train that first (3 epochs)."""
    from utils.config import load_config  # the runner imports paddle; keep this module light
    from utils.trainer import train

    cfg = load_config("configs/finetune_digits_pretrain.yml",
                      [f"Global.output_dir={root}", "Global.run_name=pretrain", "Global.verbose=0",
                       "VisualDL.enable=false", "Global.print_flops=false", "Global.epochs=3", "Data.fraction=0.3"])
    train(cfg, print_fn=lambda *a, **k: None)
    return [f"Global.pretrained_model={os.path.join(root, 'finetune_digits_pretrain', 'pretrain')}"]


CASES = [
    Case("mlp_digits", "configs/mlp_digits.yml", ()),
    Case("mlp_diabetes", "configs/mlp_diabetes.yml", ()),
    Case("cnn_digits", "configs/cnn_digits.yml", FAST),
    Case("cnn_sa_digits", "configs/cnn_sa_digits.yml", FAST, slow=True),
    Case("gmlp_digits", "configs/gmlp_digits.yml", FAST, slow=True),
    Case("resnet20_digits", "configs/resnet20_digits.yml", FAST, slow=True),
    # 30% of digits for 6 epochs (42 steps) leaves GoogLeNet at chance: all of it, ~35 s
    Case("googlenet_digits", "configs/googlenet_digits.yml", ("Global.epochs=6",), slow=True),
    Case("googlenet_digits_full", "configs/googlenet_digits.yml", (), slow=True),  # its normal end, ~95 s
    # its normal end (10 + 10 epochs of ResNet-18, ~8 min here) ends clean with still_learning (info)
    Case("finetune_digits", "configs/finetune_digits.yml", ("Global.epochs=4", "Data.fraction=0.3"),
         build=pretrained, slow=True),
]
