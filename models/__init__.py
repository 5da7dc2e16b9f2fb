"""Pluggable models, registered by name. Importing this package registers every family."""
# Each import registers its factories.
from models import cnn, fastnet, gmlp, googlenet, mlp, resnet, vision  # noqa: F401
from models.registry import build_model, list_models, register_model

__all__ = ["build_model", "list_models", "register_model"]
