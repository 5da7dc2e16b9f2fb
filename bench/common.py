"""Helpers shared by the benchmark scripts."""
import os
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_JPG = os.path.join(ROOT, "..", "shared", "data", "cifar10-train-jpg.tar.gz")


def extract(archive, dest):
    """Extract ``archive`` into ``dest`` once (a marker file records a complete extraction)."""
    marker = os.path.join(dest, ".complete")
    if not os.path.exists(marker):
        os.makedirs(dest, exist_ok=True)
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
        open(marker, "w").close()
    return dest


def probe_speed(cfg_path, steps=6, batch=128):
    """Training images/s of a config's model on 32x32x3 inputs (forward, backward, optimizer step)."""
    import paddle

    from models import build_model
    from utils.config import load_config, model_kwargs
    from utils.training.losses import build_loss
    from utils.training.optim import build_lr_scheduler, build_optimizer

    cfg = load_config(cfg_path)
    net = build_model(cfg["Arch"]["name"], 10, 3, 32, **model_kwargs(cfg))
    opt = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 100, 10))
    loss_fn = build_loss(cfg, 10)
    x, y = paddle.randn([batch, 3, 32, 32]), paddle.randint(0, 10, [batch, 1])
    t = None
    for i in range(steps + 1):
        if i == 1:
            t = time.time()  # the first step builds kernels and optimizer state
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
    return steps * batch / (time.time() - t)
