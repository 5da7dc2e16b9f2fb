"""Model registry: ``@register_model`` on a factory, ``build_model(name, **kw)`` to build.

Every factory takes ``num_classes``, ``in_channels`` and ``image_size`` (the side of the
square input) plus its own keyword arguments, which come from the config's ``Arch``
section. Unknown names and unknown arguments fail with the valid ones listed.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import paddle.nn as nn

from models.init import apply_init
from utils.errors import ConfigError, did_you_mean

Factory = Callable[..., nn.Layer]

_REGISTRY: dict[str, Factory] = {}


def register_model(fn: Factory) -> Factory:
    """Register a model factory under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model '{fn.__name__}' is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def model_factory(name: str) -> Factory:
    """The factory registered as ``name``; unknown names raise ConfigError listing the valid ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"Arch.name: unknown model '{name}'{did_you_mean(name, _REGISTRY)}; "
                          f"registered models: {', '.join(list_models())}")
    return _REGISTRY[name]


def check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise ConfigError for keyword arguments the factory does not take."""
    fn = model_factory(name)
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p not in ("num_classes", "in_channels", "image_size")]
    for k in kwargs:
        if k not in params:
            raise ConfigError(f"Arch.{k}: model '{name}' has no argument '{k}'{did_you_mean(k, valid)}; "
                              f"its arguments: {', '.join(valid) or '(none)'}")


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, init: str = "default",
                init_std: float = 0.02, **kwargs: Any) -> nn.Layer:
    """Build a registered model and apply the init scheme.

    Args:
        name: registered name, e.g. ``gmlp_tiny``.
        num_classes: output classes.
        in_channels: image channels (1 for digits, 3 for CIFAR).
        image_size: input side length.
        init: ``default``, ``xavier``, ``kaiming`` or ``normal`` for conv/linear weights.
        init_std: std for ``normal``.
        **kwargs: the factory's own arguments.
    """
    check_kwargs(name, kwargs)
    factory = model_factory(name)
    fixed = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    try:
        model = factory(**fixed, **kwargs)
    except Exception as e:  # the factory's checks or Paddle's (nn.Dropout(2.0) raises a bare ValueError)
        raise rejected(name, factory, fixed, kwargs, e) from None
    apply_init(model, init, init_std)
    return model


def rejected(name: str, factory: Factory, fixed: dict[str, Any], kwargs: dict[str, Any], error: Exception) -> ConfigError:
    """The ConfigError for a factory that raised ``error``, naming the ``Arch`` argument to blame.

    The culprit is the first argument whose removal (its default instead) lets the model build;
    when none does (the data's image size is at fault, or two arguments only together), the
    message lists them all. The retries happen only on this error path.
    """
    why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if not isinstance(error, (TypeError, ValueError)):
        why = f"{type(error).__name__}: {why}"

    def builds_without(k):
        try:
            factory(**fixed, **{j: v for j, v in kwargs.items() if j != k})
            return True
        except Exception:  # still failing: not this one alone
            return False

    for k in kwargs:
        if builds_without(k):
            return ConfigError(f"Arch.{k}: model '{name}' rejected {k}={kwargs[k]!r}: {why}")
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return ConfigError(f"Arch: model '{name}' rejected its arguments{f' ({args})' if args else ''}: {why}")
