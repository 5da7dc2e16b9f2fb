"""Transform ops from the config: crops, flips, normalization, resize, PIL input, reproducible draws, errors."""

import numpy as np
import pytest
from PIL import Image

from utils.data import compute_mean_std
from utils.data.transforms import OPS, build_transforms, transforms_markdown
from utils.errors import ConfigError


def test_random_crop_with_padding_keeps_size_and_shifts():
    img = (np.arange(32 * 32 * 3) % 251 + 1).astype(np.uint8).reshape(32, 32, 3)
    t = build_transforms([{"RandomCrop": {"size": 32, "padding": 4}}], where="t").ops[0]
    padded = np.zeros((40, 40, 3), np.uint8)
    padded[4:36, 4:36] = img
    shifts = set()
    for seed in range(20):
        np.random.seed(seed)
        out = t(img)
        assert out.shape == (32, 32, 3)
        found = [(dy, dx) for dy in range(9) for dx in range(9)
                 if np.array_equal(out, padded[dy:dy + 32, dx:dx + 32])]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 5


def test_flip_mirrors():
    img = np.random.RandomState(0).randint(0, 256, (4, 5, 3)).astype(np.uint8)
    assert np.array_equal(build_transforms([{"RandomHorizontalFlip": {"p": 1.0}}]).ops[0](img), img[:, ::-1])
    assert np.array_equal(build_transforms([{"RandomHorizontalFlip": {"p": 0}}]).ops[0](img), img)


def test_normalize():
    const = np.full((6, 6, 3), 128, np.uint8)
    mean, std = [0.2, 0.5, 0.8], [0.1, 0.2, 0.4]
    out = build_transforms([{"Normalize": {"mean": mean, "std": std}}])(const)
    assert out.dtype == np.float32 and out.shape == (3, 6, 6) and out.flags["C_CONTIGUOUS"]
    for c in range(3):
        assert np.allclose(out[c], (128 / 255 - mean[c]) / std[c], atol=1e-5)
    # an image normalized with its own statistics gets mean 0, std 1
    img = np.random.RandomState(1).randint(0, 256, (16, 16, 3)).astype(np.uint8)
    m, s = compute_mean_std(img[None])
    out = build_transforms(["Normalize"], mean=m, std=s)(img)
    assert np.allclose(out.mean(axis=(1, 2)), 0, atol=1e-4) and np.allclose(out.std(axis=(1, 2)), 1, atol=1e-4)
    # without Normalize: float32 CHW in [0, 1]
    out = build_transforms([])(np.full((2, 3, 1), 255, np.uint8))
    assert out.shape == (1, 2, 3) and out.dtype == np.float32 and np.allclose(out, 1.0)


def test_resize_and_center_crop():
    img = np.random.RandomState(0).randint(0, 256, (8, 8, 3)).astype(np.uint8)
    assert build_transforms([{"Resize": {"size": 12}}])(img).shape == (3, 12, 12)
    assert build_transforms([{"Resize": {"size": [10, 6]}}])(img).shape == (3, 10, 6)
    assert build_transforms([{"Resize": {"size": 5}}])(img[:, :, :1]).shape == (1, 5, 5)
    const = np.full((8, 8, 3), 50, np.uint8)
    assert (build_transforms([{"Resize": {"size": 16}}]).ops[0](const) == 50).all()
    crop = build_transforms([{"CenterCrop": {"size": 4}}]).ops[0](img)
    assert np.array_equal(crop, img[2:6, 2:6])


def test_pil_input():
    im = Image.fromarray(np.full((5, 7, 3), 51, np.uint8))
    out = build_transforms([])(im)
    assert out.shape == (3, 5, 7) and np.allclose(out, 0.2)
    assert build_transforms([])(im.convert("L")).shape == (1, 5, 7)


def test_augmentation_reproducible_with_numpy_seed():
    t = build_transforms([{"RandomCrop": {"size": 8, "padding": 2}}, "RandomHorizontalFlip"])
    img = np.random.RandomState(0).randint(0, 256, (8, 8, 3)).astype(np.uint8)
    runs = []
    for seed in (5, 5, 6):
        np.random.seed(seed)
        runs.append(np.stack([t(img) for _ in range(8)]))
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


@pytest.mark.parametrize("ops, words", [
    ([{"RandomCrp": {"size": 3}}], ["Transforms.train[0]", "RandomCrp", "did you mean 'RandomCrop'", "valid ops"]),
    ([{"RandomCrop": {"size": 3, "pad": 1}}], ["'pad'", "did you mean 'padding'", "valid parameters of RandomCrop: size, padding"]),
    ([{"RandomCrop": {}}], ["needs parameter(s) size"]),
    ([{"Resize": {"size": -2}}], ["Resize", "positive int"]),
    ([{"RandomHorizontalFlip": {"p": 2}}], ["p must be a probability"]),
    (["Normalize", "RandomHorizontalFlip"], ["Normalize must be the last op"]),
    ([{"Normalize": {"mean": [125, 120, 110], "std": [60, 60, 60]}}], ["[0,1] units"]),
    (["Normalize"], ["Normalize has no mean/std"]),
    ([{"RandomCrop": {"size": 3}, "Resize": {"size": 3}}], ["each op must be"]),
])
def test_transform_config_errors(ops, words):
    with pytest.raises(ConfigError) as e:
        build_transforms(ops, where="Transforms.train")
    for w in words:
        assert w in str(e.value)


def test_transforms_markdown_lists_every_op():
    md = transforms_markdown()
    for name in OPS:
        assert f"`{name}`" in md
    assert "`padding=0`" in md and "| op | parameters |" in md
