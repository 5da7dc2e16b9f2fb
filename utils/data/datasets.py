"""The dataset classes the loaders iterate: :class:`ImageDataset` (a split of images) and
:class:`TabularDataset` (a split of a feature table for regression).

Both are ``paddle.io.Dataset`` subclasses, so this module imports paddle; the package exposes
them lazily (``utils.data.ImageDataset``) so importing :mod:`utils.data` stays paddle-free.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*ccache.*")  # Paddle's import-time notice
    import paddle

from utils.data.storage import ArrayStore, FileStore, Store
from utils.data.transforms import Compose


class ImageDataset(paddle.io.Dataset):
    """A split: yields ``(float32 [C,H,W], int64 [1])``.

    ``raw(i)`` gives the untransformed ``(uint8 HWC, label)``; ``labels`` is the numpy
    int64 label array; ``path(i)`` the image file (None for array-backed sources).
    """

    def __init__(self, store: Store, indices: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 class_names: Sequence[str] | None = None, split: str = "train") -> None:
        super().__init__()
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform if transform is not None else Compose([])
        self.class_names = list(class_names) if class_names is not None else None
        self.split = split

    def __len__(self) -> int:
        return len(self.indices)

    def _image(self, i):
        img = self.store.get(self.indices[i])
        return img[:, :, None] if img.ndim == 2 else img

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.transform(self._image(i)), np.array([self.labels[i]], dtype=np.int64)

    def raw(self, i: int) -> tuple[np.ndarray, int]:
        """Untransformed (uint8 HWC array, int label) of sample i."""
        return self._image(i), int(self.labels[i])

    def path(self, i: int) -> str | None:
        """File of sample i, or None when the source is an array (CIFAR, digits)."""
        return self.store.path(self.indices[i])

    @property
    def preloaded(self) -> bool:
        """Whether the images are in memory (False: decoded from their files at every access)."""
        return not isinstance(self.store, FileStore)

    def subset(self, positions: Sequence[int] | np.ndarray, split: str | None = None) -> ImageDataset:
        """A new dataset with samples ``positions`` (indices into this one)."""
        positions = np.asarray(positions, dtype=np.int64)
        return ImageDataset(self.store, self.indices[positions], self.labels[positions],
                            self.transform, self.class_names, split or self.split)

    def with_transform(self, transform: Callable[[np.ndarray], np.ndarray]) -> ImageDataset:
        """The same samples with another transform (e.g. the eval pipeline on train)."""
        return ImageDataset(self.store, self.indices, self.labels, transform, self.class_names, self.split)

    def iter_raw_chunks(self, chunk: int = 2048) -> Iterator[np.ndarray | list[np.ndarray]]:
        """Yield uint8 arrays N x H x W x C (array stores) or lists of HWC arrays."""
        if isinstance(self.store, ArrayStore):
            for s in range(0, len(self), chunk):
                yield self.store.images[self.indices[s:s + chunk]]
        else:
            for s in range(0, len(self), chunk):
                yield [self._image(i) for i in range(s, min(s + chunk, len(self)))]

    def __repr__(self) -> str:
        return f"ImageDataset({self.split}: {len(self)} samples, transform={self.transform})"


class TabularDataset(paddle.io.Dataset):
    """A regression split of a feature table: yields ``(float32 [F, 1, 1], float32 [1])``.

    ``features`` and ``targets`` are kept in their original units; each item is normalized on
    the way out (features with the per-feature ``mean``/``std``, the target with
    ``target_mean``/``target_std``; std 1 and mean 0 = unchanged). ``targets`` is the target
    array in original units.
    """

    def __init__(self, features: np.ndarray, targets: np.ndarray, mean: Sequence[float], std: Sequence[float],
                 target_mean: float = 0.0, target_std: float = 1.0, split: str = "train") -> None:
        super().__init__()
        self.features = np.asarray(features, np.float64)
        self.targets = np.asarray(targets, np.float64)
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)
        self.target_mean = float(target_mean)
        self.target_std = float(target_std)
        self.split = split
        self.class_names = None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        x = ((self.features[i] - self.mean) / self.std).astype(np.float32)
        y = np.array([(self.targets[i] - self.target_mean) / self.target_std], np.float32)
        return x.reshape(-1, 1, 1), y

    def subset(self, positions: Sequence[int] | np.ndarray, split: str | None = None) -> TabularDataset:
        """A new dataset with samples ``positions`` (indices into this one), same normalization."""
        positions = np.asarray(positions, dtype=np.int64)
        return TabularDataset(self.features[positions], self.targets[positions], self.mean, self.std,
                              self.target_mean, self.target_std, split or self.split)

    def __repr__(self) -> str:
        return f"TabularDataset({self.split}: {len(self)} samples x {self.features.shape[1]} features)"
