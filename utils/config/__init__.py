"""Strict YAML configs: ``_base_`` inheritance, ``-o Key.sub=value`` overrides, a schema.

Every valid key, its type, default and meaning lives in :data:`SCHEMA`; ``configs/README.md``
is generated from it (``python tools/config_doc.py``) and a test keeps the two in sync.
Unknown keys and wrong types are errors that name the key, the file and line, and the
closest valid key. YAML is read with ``yaml.safe_load`` only; override values too.

Two sections are open: ``Arch`` passes its extra keys to the model factory, which checks
them against its signature; ``Transforms`` lists ops checked by the transform registry.

:mod:`~utils.config.schema` holds the keys, :mod:`~utils.config.load` reads and checks a file.
"""
from utils.config.load import (
    add_override_arg,
    check_ema,
    check_ema_decay,
    check_ema_every_iters,
    check_task,
    dump_config,
    load_config,
    model_kwargs,
    parse_override,
    read_yaml_text,
    validate,
)
from utils.config.schema import DATASETS, OPTIMIZERS, SCHEDULES, SCHEMA, Key, defaults, schema_markdown

__all__ = ["DATASETS", "OPTIMIZERS", "SCHEDULES", "SCHEMA", "Key", "add_override_arg", "check_ema", "check_ema_decay",
           "check_ema_every_iters", "check_task", "defaults", "dump_config", "load_config", "model_kwargs",
           "parse_override", "read_yaml_text", "schema_markdown", "validate"]
