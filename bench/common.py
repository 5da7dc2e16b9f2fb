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


def median_ms(seconds):
    """Median of a list of durations in seconds, in milliseconds."""
    s = sorted(seconds)
    mid = len(s) // 2
    return 1e3 * (s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2)


def interleave(cases, rounds, warmup=1):
    """Run every callable of ``cases`` ``warmup`` times, then ``rounds`` times in turn; their return values per case.

    The order rotates every round, so no case always runs right after the same other one; on a
    shared machine the load drifts over minutes, and cases measured side by side see the same drift.
    """
    names = list(cases)
    for name in names:
        for _ in range(warmup):
            cases[name]()
    out = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(cases[name]())
    return out


def build_trainable(cfg, network=None, num_classes=10):
    """(network, optimizer, loss) of a validated config as the trainer builds them, for 32x32x3 inputs.

    ``Optimizer.param_groups`` are applied (their per-parameter LR and decay change the optimizer's
    work); ``network`` replaces the config's model (a variant of it) when given.
    """
    from models import build_model  # imports paddle: deferred until the caller has set the threads
    from utils.config import model_kwargs
    from utils.training.losses import build_loss
    from utils.training.optim import build_lr_scheduler, build_optimizer
    from utils.training.param_groups import apply_param_groups

    a, o = cfg["Arch"], cfg["Optimizer"]
    net = network if network is not None else build_model(
        a["name"], num_classes, 3, 32, init=a["init"], init_std=a["init_std"], **model_kwargs(cfg))
    apply_param_groups(net, o["param_groups"], o["weight_decay"], o["regularizer"], decoupled=o["name"] == "AdamW")
    opt = build_optimizer(cfg, net.parameters(), build_lr_scheduler(cfg, 100, cfg["Global"]["epochs"]))
    return net, opt, build_loss(cfg, num_classes)


def train_step(net, opt, loss_fn, x, y):
    """One plain training step: (forward with the loss, backward, optimizer step + clear_grad) in seconds.

    CPU kernels run synchronously in dygraph, so perf_counter brackets each part without a sync.
    """
    t0 = time.perf_counter()
    loss = loss_fn(net(x), y)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    opt.clear_grad()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def nhwc_twin(net, forwards=None):
    """A channels-last copy of ``net`` (same weights); feed it ``x.transpose([0, 2, 3, 1])``.

    For nets whose layout-dependent layers are Conv2D, BatchNorm2D, MaxPool2D and adaptive
    pools (others raise ValueError). Paddle 3.3.1's AdaptiveMaxPool2D takes no data_format: its
    input is turned back to NCHW first (after the last stage, so the tensor is small). A model's
    own layers with layout code in their forward get theirs from ``forwards`` ({class: function
    taking (layer, x)}); compare the twin's outputs with the original's to catch any left over.
    """
    import copy
    import types

    import paddle.nn as nn  # deferred: this module stays paddle-free at import

    twin = copy.deepcopy(net)
    for layer in twin.sublayers(include_self=True):
        for cls, fn in (forwards or {}).items():
            if isinstance(layer, cls):
                layer.forward = types.MethodType(fn, layer)
        if isinstance(layer, nn.Conv2D):
            if layer._padding_mode != "zeros" or not isinstance(layer._padding, int):
                raise ValueError(f"nhwc_twin: only int zero padding is converted, not {layer}")
            layer._data_format, layer._channel_dim = "NHWC", 3
        elif isinstance(layer, (nn.BatchNorm2D, nn.AdaptiveAvgPool2D)):
            layer._data_format = "NHWC"
        elif isinstance(layer, nn.MaxPool2D):
            layer.data_format = "NHWC"
        elif isinstance(layer, nn.AdaptiveMaxPool2D):
            layer.register_forward_pre_hook(lambda _layer, inputs: (inputs[0].transpose([0, 3, 1, 2]),))
        elif isinstance(layer, (nn.AvgPool2D, nn.Conv2DTranspose, nn.BatchNorm, nn.GroupNorm, nn.InstanceNorm2D,
                                nn.Upsample, nn.PixelShuffle)):
            raise ValueError(f"nhwc_twin: {type(layer).__name__} is not converted")
    return twin


def replace_layers(net, cls, make):
    """``net`` with every sublayer of class ``cls`` replaced by ``make(old_layer)``, in place; returns ``net``."""
    for _, parent in [("", net), *net.named_sublayers()]:
        for attr, child in list(parent.named_children()):
            if isinstance(child, cls):
                setattr(parent, attr, make(child))
    return net


def markdown_table(header, rows):
    """Print a Markdown table: the first column left-aligned, the others right-aligned."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print()


def with_flag(flag, fn):
    """``fn`` wrapped so that the Paddle flag ``flag`` is on while it runs."""
    import paddle  # deferred: this module stays paddle-free at import

    def run():
        paddle.set_flags({flag: True})
        try:
            return fn()
        finally:
            paddle.set_flags({flag: False})
    return run


def with_threads(n, restore, fn):
    """``fn`` wrapped so that Paddle's kernels use ``n`` threads while it runs, ``restore`` after."""
    import paddle  # deferred: this module stays paddle-free at import

    def run():
        paddle.base.core.set_num_threads(n)  # in-process: the OMP and math-library threads Paddle uses
        try:
            return fn()
        finally:
            paddle.base.core.set_num_threads(restore)
    return run


def instrumented_hapi(net, opt, loss_fn, x, y):
    """A callable running ``paddle.Model.train_batch`` once; returns hapi's own seconds in it.

    hapi's own time = the call minus the network's forward, the loss, backward, ``minimize`` and
    ``clear_gradients`` timed inside the same call: the difference of two separately timed medians
    drowns in the noise of a shared machine (it came out negative), this does not.
    """
    import paddle  # deferred: this module stays paddle-free at import

    marks = {}
    net.register_forward_pre_hook(lambda *_: marks.__setitem__("f0", time.perf_counter()))
    net.register_forward_post_hook(lambda *_: marks.__setitem__("f1", time.perf_counter()))

    def timed(key, fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            marks[key] = marks.get(key, 0.0) + time.perf_counter() - t0
            if key == "loss":
                marks["l1"] = time.perf_counter()
            return out
        return run

    model = paddle.Model(net)
    model.prepare(opt, timed("loss", loss_fn), paddle.metric.Accuracy(topk=(1,), name="acc"))  # as the trainer
    minimize, clear = opt.minimize, net.clear_gradients

    def step_start(*a, **k):
        marks["bwd"] = time.perf_counter() - marks["l1"]  # add_n of one loss, then backward
        return timed("min", minimize)(*a, **k)

    opt.minimize = step_start
    net.clear_gradients = timed("clear", clear)

    def run():
        marks.clear()
        t0 = time.perf_counter()
        model.train_batch([x], [y])
        total = time.perf_counter() - t0
        return total - (marks["f1"] - marks["f0"]) - marks["loss"] - marks["bwd"] - marks["min"] - marks["clear"]
    return run
