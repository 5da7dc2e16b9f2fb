"""The dataset sources, one module per family; importing this package registers them all.

The import order is the registration order, which ``list_datasets()`` (and so the ``Data.name``
choices) keeps: a new source is a module here with a ``@register_dataset`` function, imported below.
"""
# isort: off
from utils.data.sources import digits, cifar, folder, filelist, diabetes
# isort: on

__all__ = ["digits", "cifar", "folder", "filelist", "diabetes"]
