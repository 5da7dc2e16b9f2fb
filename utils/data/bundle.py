"""The :class:`DataBundle`: what ``build_datasets`` returns for every source (splits, classes, input shape,
the normalization the pipelines use)."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the dataset classes import paddle; annotations only need their names
    from utils.data.datasets import ImageDataset, TabularDataset
    from utils.data.transforms import Compose


@dataclasses.dataclass
class DataBundle:
    """What :func:`~utils.data.build.build_datasets` returns; mean/std are the values the pipelines use."""
    train: ImageDataset | TabularDataset
    val: ImageDataset | TabularDataset | None
    test: ImageDataset | None
    num_classes: int
    class_names: list
    in_channels: int
    image_size: int | tuple[int, int]
    mean: list
    std: list
    name: str = ""
    train_transform: Compose | None = None
    eval_transform: Compose | None = None
    # Regression (tabular data): the network sees num_features x 1 x 1 inputs (in_channels =
    # num_features, image_size = 1) and one output; target_mean/std are the normalization of the
    # target (None = not normalized): prediction * target_std + target_mean is in target units.
    task: str = "classification"
    num_features: int | None = None
    target_mean: float | None = None
    target_std: float | None = None

    def summary(self) -> str:
        """One line: source, split sizes, classes, input shape, normalization."""
        size = self.image_size if isinstance(self.image_size, tuple) else (self.image_size, self.image_size)
        parts = [f"{len(self.train)} train"]
        parts.append(f"{len(self.val)} val" if self.val is not None else "no val")
        if self.test is not None:
            parts.append(f"{len(self.test)} test")
        return (f"{self.name}: {' / '.join(parts)}, {self.num_classes} classes, "
                f"{self.in_channels}x{size[0]}x{size[1]}, mean {self.mean} std {self.std}")
