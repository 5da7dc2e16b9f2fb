"""Where one training step's time goes, and which speed levers win (CPU, 32x32x3 CIFAR inputs).

    python bench/bench_step.py [--configs fast_cifar10 cnn_cifar10 ...] [--steps 8] [--lever-steps 5]
                               [--skip-profile] [--skip-levers]

1. Step profile of each config at its DataLoader.batch_size: data (one batch drawn from the config's
   own per-sample pipeline on a synthetic CIFAR-10 tarball, and from the batched loader when
   ``DataLoader.batched`` exists), forward (with the loss), backward, optimizer step (the config's
   optimizer, schedule, param groups and loss), and hapi's per-batch overhead (``Model.train_batch``
   minus the same plain step, interleaved with it). Medians over --steps after warm-up.
2. Levers on the fast net and on cnn_cifar10, as images/s relative to the config as shipped, all
   cases of a model interleaved step by step in one run: threads, batch size, channels-last convs,
   oneDNN flags, GELU vs ReLU; fused conv+BN is looked for and reported.
3. The same two models by layer type: each layer's forward+backward in isolation on the inputs it
   sees in the model, at this process's threads and at 1 (pooling's thread scaling).
4. gMLP layouts: the Spatial Gating Unit's token-mixing matmul and the channel Linear, rewritten.

Prints Markdown tables; asserts nothing about time. The machine is shared: read the ratios, which
come from cases measured side by side, rather than the absolute figures.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import time
import types
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.build import configure_threads  # noqa: E402

THREADS = configure_threads(0)  # before paddle: every core unless OMP_NUM_THREADS says otherwise

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn as nn  # noqa: E402
from common import (  # noqa: E402
    build_trainable,
    instrumented_hapi,
    interleave,
    markdown_table,
    median_ms,
    nhwc_twin,
    replace_layers,
    train_step,
    with_flag,
    with_threads,
)

import models.fastnet as fastnet_module  # noqa: E402
from models.fastnet import FastNet  # noqa: E402
from utils.config import SCHEMA, load_config  # noqa: E402
from utils.data import build_datasets, build_loaders  # noqa: E402
from utils.data.synthetic import make_cifar_tarball  # noqa: E402

warnings.filterwarnings("ignore")  # hapi's to_tensor notice per batch, BatchNorm's tracking notice
DEFAULT_CONFIGS = ["fast_cifar10", "gmlp_cifar10", "googlenet_cifar10", "cnn_cifar10", "resnet20_cifar10"]
LEVER_CONFIGS = ["fast_cifar10", "cnn_cifar10"]
BATCHES = (64, 128, 256, 512)
FLAGS = ("FLAGS_use_mkldnn", "FLAGS_use_onednn")
# Layers of ours whose forward has NCHW code, channels-last versions for the NHWC twin.
NHWC_FORWARDS = {fastnet_module.ShiftNorm: lambda self, x: self.norm(x) + self.bias.reshape([1, 1, 1, -1])} \
    if hasattr(fastnet_module, "ShiftNorm") else {}


def cfg_path(name):
    return name if name.endswith((".yml", ".yaml")) else os.path.join(ROOT, "configs", f"{name}.yml")


def inputs(batch, seed=0):
    paddle.seed(seed)
    return paddle.randn([batch, 3, 32, 32]), paddle.randint(0, 10, [batch, 1])


# ----------------------------------------------------------------------------- 1. step profile

def data_ms(path, tar, batched, draws, warmup):
    """Median ms to draw one training batch from the config's loader (num_workers 0: the cost in this process)."""
    over = [f"Data.data_dir={tar}", "Data.download=false", "DataLoader.num_workers=0"]
    if batched:
        over.append("DataLoader.batched=true")
    cfg = load_config(path, over)
    loader, _ = build_loaders(cfg, build_datasets(cfg))
    np.random.seed(0)
    it, times = iter(loader), []
    while len(times) < draws + warmup:
        t0 = time.perf_counter()
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            continue
        times.append(time.perf_counter() - t0)
    return median_ms(times[warmup:])


def profile(names, tar, steps, warmup):
    has_batched = "batched" in SCHEMA["DataLoader"]
    if not has_batched:
        print("note: DataLoader.batched is not in utils/config/schema.py: the batched data column is skipped\n")
    rows = []
    for name in names:
        path = cfg_path(name)
        cfg = load_config(path)
        batch = cfg["DataLoader"]["batch_size"]
        d = data_ms(path, tar, False, steps, warmup)
        db = data_ms(path, tar, True, steps, warmup) if has_batched else None
        net, opt, loss_fn = build_trainable(cfg)
        x, y = inputs(batch)
        hapi = instrumented_hapi(net, opt, loss_fn, x, y)
        r = interleave({"plain": lambda: train_step(net, opt, loss_fn, x, y), "hapi": hapi}, steps, warmup)
        fwd, bwd, upd = (median_ms([p[i] for p in r["plain"]]) for i in range(3))
        over = median_ms(r["hapi"])
        step = d + fwd + bwd + upd + over
        share = [f"{v:.1f} ({100 * v / step:.0f}%)" for v in (d, fwd, bwd, upd, over)]
        batched = "n/a" if db is None else f"{db:.1f}"
        ips_b = "n/a" if db is None else f"{batch / (step - d + db) * 1e3:.0f}"
        rows.append([f"{name} ({cfg['Arch']['name']})", batch, *share, batched, f"{step:.0f}",
                     f"{batch / step * 1e3:.0f}", ips_b])
        print(f"  profiled {name}", file=sys.stderr)
    print(f"## 1. Step profile: ms per step (share of the step), {THREADS} threads, median of {steps} after {warmup} "
          f"warm-up\n")
    print("data = one batch from the config's per-sample pipeline (num_workers 0); step = data + forward + "
          "backward + optimizer + hapi; the last column swaps in the batched loader's data time.\n")
    markdown_table(["config (model)", "batch", "data", "forward", "backward", "optimizer", "hapi overhead", "batched data",
           "step ms", "images/s", "images/s batched"], rows)


# ----------------------------------------------------------------------------- 2. levers

def max_diff(a, b, x, b_input=None):
    """Largest |a(x) - b(x)| in eval mode (b gets ``b_input`` when its layout differs)."""
    a.eval()
    b.eval()
    with paddle.no_grad():
        d = float((a(x) - b(x if b_input is None else b_input)).abs().max())
    a.train()
    b.train()
    return d


def lever_cases(name):
    """{case: (step callable returning seconds, batch)} and {case: note} for one config."""
    cfg = load_config(cfg_path(name))
    batch = cfg["DataLoader"]["batch_size"]
    net, opt, loss_fn = build_trainable(cfg)
    data = {b: inputs(b) for b in set(BATCHES) | {batch}}

    def plain(n, o, b, layout=None):
        x, y = data[b]
        if layout == "NHWC":
            return lambda: sum(train_step(n, o, loss_fn, x.transpose([0, 2, 3, 1]), y))
        return lambda: sum(train_step(n, o, loss_fn, x, y))

    base = plain(net, opt, batch)
    cases = {"baseline (as shipped)": (base, batch)}
    notes = {"baseline (as shipped)": f"batch {batch}, {THREADS} threads, NCHW"}
    if THREADS != 1:
        cases["threads 1 (in-process)"] = (with_threads(1, THREADS, base), batch)
        notes["threads 1 (in-process)"] = "paddle.base.core.set_num_threads(1) around the step"
    for b in BATCHES:
        if b != batch:
            cases[f"batch {b}"] = (plain(net, opt, b), b)
    x = data[batch][0][:8]
    try:
        twin = nhwc_twin(net, NHWC_FORWARDS)
        _, topt, _ = build_trainable(cfg, twin)
        notes["NHWC convs"] = f"max |logit diff| vs NCHW {max_diff(net, twin, x, x.transpose([0, 2, 3, 1])):.1e}"
        cases["NHWC convs"] = (plain(twin, topt, batch, "NHWC"), batch)
    except Exception as e:  # a model whose forward has layout code the twin does not know: say so, go on
        notes["NHWC convs"] = f"not measured: {type(e).__name__}: {str(e).strip().splitlines()[0][:80]}"
    for flag in FLAGS:
        if flag in paddle.get_flags(list(FLAGS)):
            cases[flag] = (with_flag(flag, base), batch)
            net.eval()
            with paddle.no_grad():
                paddle.set_flags({flag: True})
                on = net(x).numpy()
                paddle.set_flags({flag: False})
                off = net(x).numpy()
            net.train()
            changed = float(np.abs(on - off).max())
            notes[flag] = (f"max |logit diff| on vs off {changed:.1e}" + (
                " (bit-identical: the same kernels ran, so this ratio is the noise floor)" if changed == 0 else ""))
    if isinstance(net, FastNet):
        a = cfg["Arch"]
        relu = FastNet(10, 3, a.get("widths", (64, 128, 128)), act_layer=nn.ReLU)
        _, ropt, _ = build_trainable(cfg, relu)
        cases["ReLU instead of GELU"] = (plain(relu, ropt, batch), batch)
        shift = getattr(fastnet_module, "ShiftNorm", None)
        if shift and any(isinstance(m, shift) for m in net.sublayers()):
            bn = replace_layers(copy.deepcopy(net), shift, frozen_scale_bn)
            _, bopt, _ = build_trainable(cfg, bn)
            cases["BatchNorm2D, scale at LR 0, for ShiftNorm"] = (plain(bn, bopt, batch), batch)
            notes["BatchNorm2D, scale at LR 0, for ShiftNorm"] = (
                f"max |logit diff| {max_diff(net, bn, x):.1e}; ShiftNorm's broadcast bias add has a slow "
                f"reduce_sum backward")
    return cases, notes


def frozen_scale_bn(shift):
    """A BatchNorm2D doing what ``shift`` (a ShiftNorm) does: its scale trains at LR 0, so it stays 1."""
    out = nn.BatchNorm2D(shift.bias.shape[0], momentum=shift.norm._momentum, epsilon=shift.norm._epsilon,
                         weight_attr=paddle.ParamAttr(learning_rate=0.0, initializer=nn.initializer.Constant(1.0)))
    out.bias.set_value(shift.bias)
    out._mean.set_value(shift.norm._mean)
    out._variance.set_value(shift.norm._variance)
    return out


def thread_worker(names, steps):
    """Subprocess mode: median ms of each config's plain step at this process's OMP_NUM_THREADS, as JSON."""
    out = {}
    for name in names:
        cfg = load_config(cfg_path(name))
        net, opt, loss_fn = build_trainable(cfg)
        x, y = inputs(cfg["DataLoader"]["batch_size"])
        r = interleave({"s": lambda: sum(train_step(net, opt, loss_fn, x, y))}, steps, 1)
        out[name] = median_ms(r["s"])
    print(json.dumps({"threads": THREADS, "ms": out}))


def thread_runs(names, steps, runs):
    """{threads: {config: ms}} from fresh processes with OMP_NUM_THREADS=1 and 2, alternating ``runs`` times."""
    res = {1: {n: [] for n in names}, 2: {n: [] for n in names}}
    for _ in range(runs):
        for n in (1, 2):
            env = {**os.environ, "OMP_NUM_THREADS": str(n)}
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--thread-worker", "--configs", *names,
                                "--lever-steps", str(steps)], env=env, capture_output=True, text=True, check=True)
            got = json.loads(p.stdout.strip().splitlines()[-1])
            for name, ms in got["ms"].items():
                res[n][name].append(ms / 1e3)
    return {n: {name: median_ms(v) for name, v in d.items()} for n, d in res.items()}


def fused_conv_bn_checks():
    """What Paddle 3.3.1 offers for a fused conv+BN in dygraph training on CPU, checked here."""
    lines = [f"paddle.nn fused layers: {[n for n in dir(nn) if 'fuse' in n.lower()] or 'none'}",
             f"paddle.incubate.nn fused layers: {[n for n in dir(paddle.incubate.nn) if n.startswith('Fused')]} "
             f"(transformer and linear blocks, no conv)"]
    try:
        from paddle.incubate.operators import ResNetUnit

        u = ResNetUnit(8, 8, 3, 1, 0.9, 1e-5, "NHWC", "relu")
        u(paddle.randn([2, 4, 4, 8]), None)
        lines.append("paddle.incubate.operators.ResNetUnit (conv+BN+act): runs on CPU")
    except Exception as e:  # no CPU kernel: the message is the operator's name only
        lines.append(f"paddle.incubate.operators.ResNetUnit (conv+BN+act, cuDNN v8): fails on CPU "
                     f"({type(e).__name__}: {str(e).strip().splitlines()[-1].strip()[:60]})")
    try:
        t = paddle.randn([2, 4, 4, 8])
        z, o = paddle.zeros([8]), paddle.ones([8])
        paddle._C_ops.fused_batch_norm_act(t, z, o, o, z, 0.9, 1e-5, "relu")
        lines.append("_C_ops.fused_batch_norm_act: runs on CPU")
    except Exception as e:
        lines.append(f"_C_ops.fused_batch_norm_act (BN+act): no CPU kernel ({type(e).__name__})")
    lines.append("_C_ops.fused_conv2d_add_act: static-graph only (an inference pass fuses it), no backward")
    return lines


def levers(steps, thread_steps, thread_reps):
    results = {}
    for name in LEVER_CONFIGS:
        cases, notes = lever_cases(name)
        r = interleave({k: fn for k, (fn, _) in cases.items()}, steps, 1)
        ms = {k: median_ms(v) for k, v in r.items()}
        results[name] = (cases, notes, ms, cases["baseline (as shipped)"][1])
        print(f"  levers measured on {name}", file=sys.stderr)
    sub = thread_runs(LEVER_CONFIGS, thread_steps, thread_reps)
    names = list(dict.fromkeys(k for n in LEVER_CONFIGS for k in [*results[n][0], *results[n][1]]))
    rows = []
    for case in names:
        row = [case]
        for n in LEVER_CONFIGS:
            cases, notes, ms, batch = results[n]
            if case not in cases:
                row += ["-", "-"]
                continue
            b = cases[case][1]
            ratio = (b / ms[case]) / (batch / ms["baseline (as shipped)"])
            row += [f"{ms[case]:.0f} ({b / ms[case] * 1e3:.0f} img/s)", f"{ratio:.2f}"]
        row.append("; ".join(f"{n}: {results[n][1][case]}" for n in LEVER_CONFIGS if case in results[n][1]))
        rows.append(row)
    for n in (1, 2):
        row = [f"OMP_NUM_THREADS={n} (fresh process)"]
        for name in LEVER_CONFIGS:
            b = results[name][3]
            row += [f"{sub[n][name]:.0f} ({b / sub[n][name] * 1e3:.0f} img/s)",
                    f"{sub[2][name] / sub[n][name]:.2f}"]
        row.append("ratio to the OMP_NUM_THREADS=2 process; separate processes, so less side by side")
        rows.append(row)
    hdr = ["lever"]
    for n in LEVER_CONFIGS:
        hdr += [f"{n}: ms/step", f"{n}: img/s ratio"]
    print(f"## 2. Levers: images/s relative to the config as shipped (> 1 is faster), median of {steps} "
          f"interleaved steps\n")
    markdown_table(hdr + ["note"], rows)
    print("Fused conv+BN for dygraph training on CPU, checked:\n")
    for line in fused_conv_bn_checks():
        print(f"- {line}")
    print()
    return results


# ----------------------------------------------------------------------------- 3. by layer type

def layer_calls(net, x):
    """(layer, input) of every leaf layer call in one forward pass."""
    calls, hooks = [], []
    for layer in net.sublayers():
        if not layer.sublayers() and not isinstance(layer, (nn.Flatten, nn.Identity, nn.Dropout)):
            hooks.append(layer.register_forward_pre_hook(lambda lay, inp: calls.append((lay, inp[0].detach()))))
    net(x)
    for h in hooks:
        h.remove()
    return calls


def isolated(layer, x):
    def run():
        t0 = time.perf_counter()
        xi = x.detach()
        xi.stop_gradient = False
        y = layer(xi)
        paddle.autograd.backward([y], [paddle.ones_like(y)])
        return time.perf_counter() - t0
    return run


def by_layer(results, steps):
    rows = []
    for name in LEVER_CONFIGS:
        _, _, step_ms, batch = results[name]
        cfg = load_config(cfg_path(name))
        net, _, _ = build_trainable(cfg)
        x, _ = inputs(batch)
        calls = layer_calls(net, x)
        fns = {}
        for i, (lay, inp) in enumerate(calls):
            fns[(i, THREADS)] = isolated(lay, inp)
            if THREADS != 1:
                fns[(i, 1)] = with_threads(1, THREADS, isolated(lay, inp))
        r = interleave(fns, steps, 1)
        agg = {}
        for i, (lay, _) in enumerate(calls):
            a = agg.setdefault(type(lay).__name__, [0, 0.0, 0.0])
            a[0] += 1
            a[1] += median_ms(r[(i, THREADS)])
            a[2] += median_ms(r[(i, 1)]) if THREADS != 1 else float("nan")
        total = step_ms["baseline (as shipped)"]
        for kind, (count, ms_n, ms_1) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
            one = ["-", "-"] if THREADS == 1 else [f"{ms_1:.1f}", f"{ms_1 / ms_n:.2f}"]
            rows.append([name, kind, count, f"{ms_n:.1f}", f"{100 * ms_n / total:.0f}%", *one])
        rows.append([name, "sum of layers / whole step", "", f"{sum(a[1] for a in agg.values()):.0f} / {total:.0f}",
                     "", "", ""])
    print(f"## 3. By layer type: forward+backward of each layer alone on its own input, median of {steps}\n")
    markdown_table(["config", "layer type", "calls", f"ms ({THREADS} threads)", "share of step", "ms (1 thread)",
           f"1 -> {THREADS} threads speed-up"], rows)


# ----------------------------------------------------------------------------- 4. gMLP layouts

def sgu_one_gemm(self, x):
    u, v = paddle.chunk(x, 2, axis=-1)
    n, seq, c = v.shape
    v = self.norm(v).transpose([1, 0, 2]).reshape([seq, n * c])  # [L, N*C]: one GEMM instead of N
    v = paddle.matmul(self.spatial_weight, v).reshape([seq, n, c]).transpose([1, 0, 2]) + self.spatial_bias
    return u * v


def sgu_flags(self, x):
    u, v = paddle.chunk(x, 2, axis=-1)
    # (W v)^T = v^T W^T, with both transposes done by the matmul flags: [N, C, L] -> back to [N, L, C]
    v = paddle.matmul(self.norm(v), self.spatial_weight, transpose_x=True, transpose_y=True)
    return u * (v.transpose([0, 2, 1]) + self.spatial_bias)


def sgu_einsum(self, x):
    u, v = paddle.chunk(x, 2, axis=-1)
    return u * (paddle.einsum("ij,njc->nic", self.spatial_weight, self.norm(v)) + self.spatial_bias)


def linear_2d(self, x):
    shape = x.shape
    return paddle.nn.functional.linear(x.reshape([-1, shape[-1]]), self.weight, self.bias).reshape(
        shape[:-1] + [self.weight.shape[1]])


def linear_einsum(self, x):
    return paddle.einsum("nlc,cd->nld", x, self.weight) + self.bias


class GemvBiasAdd(paddle.autograd.PyLayer):
    """y + bias whose bias gradient is ones @ grad (a GEMV): Paddle 3.3.1's CPU reduce_sum over the
    leading axis, which the broadcast add's backward uses, took 31 ms for [8192, 512], the GEMV 0.7 ms."""

    @staticmethod
    def forward(ctx, y, bias):
        return y + bias

    @staticmethod
    def backward(ctx, grad):
        rows = grad.reshape([-1, grad.shape[-1]])
        return grad, paddle.matmul(paddle.ones([1, rows.shape[0]], rows.dtype), rows).reshape([-1])


def linear_gemv_bias(self, x):
    return GemvBiasAdd.apply(paddle.matmul(x, self.weight), self.bias)


def gmlp_layouts(steps):
    from models.gmlp import GMLPBlock, SpatialGatingUnit

    cfg = load_config(cfg_path("gmlp_cifar10"))
    batch = cfg["DataLoader"]["batch_size"]
    net, opt, loss_fn = build_trainable(cfg)
    x, y = inputs(batch)
    sgus = [m for m in net.sublayers() if isinstance(m, SpatialGatingUnit)]
    fcs = [m for b in net.sublayers() if isinstance(b, GMLPBlock) for m in (b.fc1, b.fc2)]
    variants = {"baseline: W @ v broadcast over N; nn.Linear on [N, L, C]": (None, None),
                "SGU: one GEMM, W @ v as [L, N*C]": (sgu_one_gemm, None),
                "SGU: v^T @ W^T with matmul transpose flags": (sgu_flags, None),
                "SGU: einsum ij,njc->nic": (sgu_einsum, None),
                "Linear: reshaped to 2-D": (None, linear_2d),
                "Linear: einsum nlc,cd->nld": (None, linear_einsum),
                "Linear: bias gradient as a GEMV (PyLayer)": (None, linear_gemv_bias)}

    def patch(sgu_fn, fc_fn):
        for m, fn in [(s, sgu_fn) for s in sgus] + [(f, fc_fn) for f in fcs]:
            if fn is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = types.MethodType(fn, m)

    def case(sgu_fn, fc_fn):
        def run():
            patch(sgu_fn, fc_fn)
            return sum(train_step(net, opt, loss_fn, x, y))
        return run

    net.eval()
    with paddle.no_grad():
        ref = net(x[:16]).numpy()
        diffs = {}
        for k, (s, f) in variants.items():
            patch(s, f)
            diffs[k] = float(np.abs(net(x[:16]).numpy() - ref).max())
    net.train()
    r = interleave({k: case(*v) for k, v in variants.items()}, steps, 1)
    patch(None, None)
    base = median_ms(r[next(iter(variants))])
    rows = [[k, f"{median_ms(v):.0f}", f"{base / median_ms(v):.2f}", f"{diffs[k]:.1e}"] for k, v in r.items()]
    print(f"## 4. gMLP (gmlp_cifar10, batch {batch}): layouts of the token mixing and the channel Linear, "
          f"median of {steps} interleaved steps\n")
    markdown_table(["variant", "ms/step", "speed vs baseline", "max |logit diff|"], rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="config names under configs/ or paths")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per config in the profile")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (kernels, optimizer state)")
    ap.add_argument("--lever-steps", type=int, default=5, help="timed steps per lever case")
    ap.add_argument("--thread-runs", type=int, default=1, help="fresh-process pairs (OMP_NUM_THREADS 1, 2)")
    ap.add_argument("--skip-profile", action="store_true")
    ap.add_argument("--skip-levers", action="store_true")
    ap.add_argument("--thread-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.thread_worker:
        return thread_worker(args.configs, args.lever_steps)
    load = os.getloadavg()[0]
    print(f"paddle {paddle.__version__}, {os.cpu_count()} cores, {THREADS} threads, load average {load:.1f} at start\n")
    if not args.skip_profile:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
            biggest = max(load_config(cfg_path(n))["DataLoader"]["batch_size"] for n in args.configs)
            n_train = int((args.steps + args.warmup + 1) * biggest / 0.9) + 100  # val_split 0.1 is carved out
            tar = make_cifar_tarball(os.path.join(tmp, "cifar-10-python.tar.gz"), n_train=n_train, n_test=100)
            profile(args.configs, tar, args.steps, args.warmup)
    if not args.skip_levers:
        results = levers(args.lever_steps, args.lever_steps, args.thread_runs)
        by_layer(results, args.lever_steps)
        gmlp_layouts(args.lever_steps)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
