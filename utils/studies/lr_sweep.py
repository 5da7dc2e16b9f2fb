"""Running the LR range test on a Paddle network, and putting everything back afterwards.

The network is trained for up to ``num_iters`` iterations while the learning rate follows
:func:`utils.studies.lr_curve.exp_lrs`. The loss of each batch is recorded raw and smoothed (bias-corrected
moving average, beta 0.98). The sweep stops early once the smoothed loss exceeds
``diverge_factor`` (4) times the best smoothed loss seen, or at once when a loss is NaN/Inf.
Losses are assumed non-negative (cross-entropy, MSE).

Afterwards the network's parameters and buffers, the optimizer (accumulators, LR or LR scheduler,
internal bookkeeping, even the auto-generated names its accumulators will get), the train/eval mode
of every layer and the Python/NumPy/Paddle random states are exactly as before: training after
:func:`lr_range_test` gives bit-identical results to training without it. Pending gradients are
discarded (the parameters end with no gradient).

Only the LR is changed during the sweep: the optimizer's type, momentum/betas, weight decay and
gradient clipping stay as configured. The config's LR *schedule* (and its warmup) is not used:
the optimizer's scheduler is swapped for one the sweep controls (``optimizer.set_lr_scheduler``;
``optimizer.set_lr`` when the optimizer was built with a float LR) and put back afterwards.
Assigning a float to ``optimizer._learning_rate`` would change ``get_lr()`` but not the LR used.

Paddle is imported inside the functions: :mod:`utils.studies.lr_find` imports this module, and the
tools import that one before they set the thread count.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from utils.errors import UserError
from utils.studies.lr_curve import (
    RECOMMENDED,
    SUGGESTIONS,
    LRFindResult,
    check_sweep_args,
    curve_warnings,
    exp_lrs,
    suggest_lrs,
)

if TYPE_CHECKING:
    import paddle


class _State:
    """Everything the sweep changes, captured before and put back exactly afterwards."""

    def __init__(self, network: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer) -> None:
        # imports paddle: deferred until the thread count is set
        import paddle
        from paddle.base import unique_name

        self.network, self.optimizer = network, optimizer
        # network: parameters and persistable buffers (BatchNorm statistics) by value
        self.tensors = [(t, np.array(t.numpy(), copy=True)) for t in network.state_dict().values()]
        self.modes = [(layer, layer.training) for layer in network.sublayers(include_self=True)]
        # optimizer: accumulator values, which ones exist, and its bookkeeping containers
        opt = optimizer
        self.acc = {(name, p): (var, np.array(var.numpy(), copy=True))
                    for name, per in opt._accumulators.items() for p, var in per.items()}
        self.acc_names = list(opt._accumulators)
        self.created = set(getattr(opt, "_already_create_accumulator", set()))
        self.holder = dict(opt._accumulators_holder)
        self.lr_map = dict(opt._learning_rate_map)
        self.opti_names = list(getattr(opt, "_opti_name_list", []))
        self.master = {k: (v, np.array(v.numpy(), copy=True)) for k, v in getattr(opt, "_master_weights", {}).items()}
        self.helper = getattr(opt, "helper", None)
        self.lr = opt._learning_rate
        self.lr_state = self.lr.state_dict() if isinstance(self.lr, paddle.optimizer.lr.LRScheduler) else None
        # Accumulators are named from a global counter (``w_0_moment1_0``); rewinding it makes the
        # ones training creates later get the names they would have had without the sweep, so
        # checkpoints stay loadable in a fresh process.
        self.name_ids = dict(unique_name.generator.ids)
        self.name_gen = unique_name.generator
        # random states: data order, augmentation, dropout
        self.rng = (random.getstate(), np.random.get_state(), paddle.get_rng_state())

    def restore(self) -> None:
        # imports paddle: deferred until the thread count is set
        import paddle
        from paddle.base import unique_name

        net, opt = self.network, self.optimizer
        for t, value in self.tensors:
            t.set_value(value)
        opt.clear_grad(set_to_zero=False)
        # mode: the top-level call also sets the tracer's global train/eval mode
        if self.modes[0][1]:
            net.train()
        else:
            net.eval()
        for layer, mode in self.modes:
            layer.training = mode
        # accumulators: drop those the sweep created, put back the values of the others
        for name in list(opt._accumulators):
            per = opt._accumulators[name]
            for p in list(per):
                if (name, p) not in self.acc:
                    del per[p]
            if name not in self.acc_names and not per:
                del opt._accumulators[name]
        for var, value in self.acc.values():
            var.set_value(value)
        if hasattr(opt, "_already_create_accumulator"):
            opt._already_create_accumulator.clear()
            opt._already_create_accumulator.update(self.created)
        opt._accumulators_holder = dict(self.holder)
        if hasattr(opt, "_opti_name_list"):
            opt._opti_name_list[:] = self.opti_names
        if hasattr(opt, "_master_weights"):
            opt._master_weights = {k: v for k, (v, _) in self.master.items()}
            for v, value in self.master.values():
                v.set_value(value)
        opt.helper = self.helper
        opt._learning_rate_map.clear()
        opt._learning_rate_map.update(self.lr_map)
        if isinstance(self.lr, paddle.optimizer.lr.LRScheduler):
            opt.set_lr_scheduler(self.lr)
            self.lr.set_state_dict(self.lr_state)
        else:
            opt._learning_rate = self.lr  # set_lr refuses while a scheduler is installed
            opt.set_lr(self.lr)  # also refills the LR tensor when one exists
        if unique_name.generator is self.name_gen:
            self.name_gen.ids.clear()
            self.name_gen.ids.update(self.name_ids)
        random.setstate(self.rng[0])
        np.random.set_state(self.rng[1])
        paddle.set_rng_state(self.rng[2])


def _sweep_scheduler(lr: float) -> paddle.optimizer.lr.LRScheduler:
    """An LRScheduler whose value the sweep sets directly (:meth:`set`); nobody else steps it."""
    # imports paddle: deferred until the thread count is set (the class derives from a Paddle class)
    import paddle

    class _SweepLR(paddle.optimizer.lr.LRScheduler):
        def __init__(self, value):
            self.value = float(value)
            super().__init__(learning_rate=self.value, last_epoch=-1, verbose=False)

        def get_lr(self):
            return self.value

        def set(self, value):
            self.value = self.last_lr = float(value)

    return _SweepLR(lr)


def _batches(loader: Iterable) -> Iterator:
    """Endless batches: a new pass (a new shuffle) whenever the loader is exhausted."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise UserError("the training loader gives no batch: lower DataLoader.batch_size or set "
                            "DataLoader.drop_last=false")


def lr_range_test(network: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer, loss_fn: Callable, loader: Iterable, start_lr: float = 1e-7,
                  end_lr: float = 10.0, num_iters: int = 100, diverge_factor: float = 4.0, beta: float = 0.98,
                  recommended: str = RECOMMENDED,
                  callback: Callable[[int, float, float], Any] | None = None) -> LRFindResult:
    """Run the LR range test; the network and optimizer are restored afterwards.

    Args:
        network: a ``paddle.nn.Layer`` taking the loader's inputs.
        optimizer: a Paddle optimizer over the network's parameters (float LR or LRScheduler).
        loss_fn: ``loss_fn(outputs, labels)`` -> scalar tensor (non-negative).
        loader: re-iterable of ``(inputs, labels)`` batches; restarted when exhausted.
        start_lr, end_lr, num_iters: the exponential sweep.
        diverge_factor: stop once the smoothed loss exceeds this times its best.
        beta: smoothing factor of the loss's moving average (bias-corrected).
        recommended: which suggestion :attr:`LRFindResult.recommended_lr` returns.
        callback: optional ``callback(i, lr, loss)`` after each optimizer step (tests, progress).

    Returns:
        :class:`LRFindResult`.
    """
    # imports paddle: deferred until the thread count is set
    import paddle

    check_sweep_args(start_lr, end_lr, num_iters, diverge_factor, beta)
    if recommended not in SUGGESTIONS:
        raise UserError(f"recommended: {recommended!r} is not one of {', '.join(SUGGESTIONS)}")
    planned = exp_lrs(float(start_lr), float(end_lr), int(num_iters))
    state = _State(network, optimizer)
    scheduled = isinstance(optimizer._learning_rate, paddle.optimizer.lr.LRScheduler)
    sched = _sweep_scheduler(planned[0]) if scheduled else None
    lrs, losses, smoothed = [], [], []
    avg, best, best_i = 0.0, math.inf, 0
    reason, detail = "completed", f"all {num_iters} iterations run"
    t0 = time.time()
    batches = None
    try:
        if scheduled:
            optimizer.set_lr_scheduler(sched)
        optimizer.clear_grad(set_to_zero=False)
        network.train()
        batches = _batches(loader)
        for i, lr in enumerate(planned):
            lr = float(lr)
            if scheduled:
                sched.set(lr)
            else:
                optimizer.set_lr(lr)
            x, y = next(batches)[:2]
            loss = loss_fn(network(x), y)
            value = float(loss)
            lrs.append(lr)
            losses.append(value)
            if not math.isfinite(value):
                smoothed.append(math.nan)
                reason, detail = "non-finite loss", f"loss {value} at iteration {i} (lr {lr:.3g})"
                break
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            avg = beta * avg + (1 - beta) * value
            sm = avg / (1 - beta ** (i + 1))
            smoothed.append(sm)
            if callback is not None:
                callback(i, lr, value)
            if sm < best:
                best, best_i = sm, i
            if sm > diverge_factor * best:
                reason = "diverged"
                detail = (f"smoothed loss {sm:.4g} > {diverge_factor:g} x best {best:.4g} at iteration {i} "
                          f"(lr {lr:.3g})")
                break
    finally:
        if batches is not None:
            batches.close()  # ends the loader's iterator (and its workers) now
        state.restore()
    seconds = time.time() - t0

    sug, idx, window = suggest_lrs(lrs, smoothed, num_iters)
    warnings = curve_warnings(lrs, sug, idx, window, reason, detail, end_lr)
    return LRFindResult(
        lrs=lrs, losses=losses, smoothed=smoothed, suggestions=sug, indices=idx, recommended=recommended,
        stop_reason=reason, stop_detail=detail, start_lr=float(start_lr), end_lr=float(end_lr),
        num_iters=int(num_iters), beta=float(beta), diverge_factor=float(diverge_factor),
        best_loss=float(best), best_lr=float(lrs[best_i]) if lrs else math.nan, window=tuple(window),
        warnings=warnings, seconds=round(seconds, 3))
