"""Photo augmentation ops: shapes, effects, parameter errors, seeded draws; the photo folder config."""
import os

import numpy as np
import pytest
from PIL import Image

from utils.config import load_config
from utils.data import build_datasets
from utils.data.transforms import OPS, build_transforms, transforms_markdown
from utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW_OPS = {
    "RandomResizedCrop": {"size": 24},
    "RandomVerticalFlip": {},
    "ColorJitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
    "RandomRotation": {"degrees": 30},
    "RandomGrayscale": {"p": 0.5},
    "RandomErasing": {"p": 1.0, "value": "random"},
}


def photo(h=40, w=56, seed=0):
    """A smooth colour image with noise: every op visibly changes it."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 255 / (h + w)], axis=2)
    return np.clip(base + rng.randint(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


def op(name, **params):
    return build_transforms([{name: params}], where="t").ops[0]


@pytest.mark.parametrize("name", list(NEW_OPS))
def test_same_seed_same_output_other_seed_other_output(name):
    t = op(name, **NEW_OPS[name])
    img = photo()
    outs = []
    for seed in (3, 3, 4, 5, 6):
        np.random.seed(seed)
        outs.append(t(img))
    assert outs[0].dtype == np.uint8 and outs[0].ndim == 3
    assert np.array_equal(outs[0], outs[1])
    # p=0.5 ops may leave the image alone for one seed; over three other seeds one differs
    assert any(not np.array_equal(outs[0], o) for o in outs[2:])


def test_registered_and_documented():
    md = transforms_markdown()
    for name in NEW_OPS:
        assert name in OPS and f"| `{name}` |" in md
    assert "`scale=[0.08, 1.0]`" in md  # tuples shown as YAML lists


def test_random_resized_crop_size_and_window():
    t = op("RandomResizedCrop", size=[20, 30], scale=[0.5, 0.5], ratio=[1.0, 1.0])
    np.random.seed(0)
    out = t(photo(40, 40))
    assert out.shape == (20, 30, 3)
    top, left, h, w = t.window(40, 40)
    # half of the 1600-pixel area at ratio 1: a 28x28 window (round(sqrt(800)))
    assert (h, w) == (28, 28) and 0 <= top <= 12 and 0 <= left <= 12
    # an impossible ratio falls back to the central crop at the nearest allowed ratio
    wide = op("RandomResizedCrop", size=8, scale=[1.0, 1.0], ratio=[4.0, 4.0])
    assert wide.window(40, 40) == (15, 0, 10, 40)
    assert op("RandomResizedCrop", size=8)(photo()[:, :, :1]).shape == (8, 8, 1)


def test_vertical_flip_and_grayscale():
    img = photo()
    assert np.array_equal(op("RandomVerticalFlip", p=1.0)(img), img[::-1])
    assert np.array_equal(op("RandomVerticalFlip", p=0)(img), img)
    g = op("RandomGrayscale", p=1.0)(img)
    assert g.shape == img.shape and (g[:, :, 0] == g[:, :, 1]).all() and (g[:, :, 1] == g[:, :, 2]).all()
    one = img[:, :, :1]
    assert op("RandomGrayscale", p=1.0)(one) is one


def test_color_jitter_brightness_scales_and_hue_keeps_gray():
    const = np.full((8, 8, 3), 100, np.uint8)
    np.random.seed(0)
    out = op("ColorJitter", brightness=[1.5, 1.5])(const)
    assert (out == 150).all()
    # hue and saturation do nothing to a gray image, nor to a 1-channel one
    np.random.seed(0)
    assert np.array_equal(op("ColorJitter", saturation=0.9, hue=0.5)(const), const)
    assert np.array_equal(op("ColorJitter", saturation=0.9, hue=0.5)(const[:, :, :1]), const[:, :, :1])
    np.random.seed(1)
    shifted = op("ColorJitter", hue=[0.25, 0.25])(photo())
    assert not np.array_equal(shifted, photo()) and shifted.shape == photo().shape


def test_rotation_fills_corners_and_keeps_size():
    img = np.full((20, 20, 3), 200, np.uint8)
    np.random.seed(0)
    out = op("RandomRotation", degrees=[45, 45], fill=7)(img)
    assert out.shape == img.shape and (out[0, 0] == 7).all() and (out[10, 10] == 200).all()
    assert op("RandomRotation", degrees=[0, 0])(img[:, :, :1]).shape == (20, 20, 1)


def test_erasing_box_area_within_scale():
    img = np.full((50, 50, 3), 255, np.uint8)
    t = op("RandomErasing", p=1.0, scale=[0.1, 0.2], value=0)
    for seed in range(10):
        np.random.seed(seed)
        erased = (t(img) == 0).all(axis=2).sum()
        assert 0.1 * 2500 * 0.8 <= erased <= 0.2 * 2500 * 1.2  # rounding of the box sides
    assert op("RandomErasing", p=0.0)(img) is img


@pytest.mark.parametrize("entry, fragment", [
    ({"RandomResizedCrop": {}}, "needs parameter(s) size"),
    ({"RandomResizedCrop": {"size": 32, "scale": [0.9, 0.1]}}, "min <= max"),
    ({"RandomResizedCrop": {"size": 32, "scale": [0.1, 1.5]}}, "within [0, 1]"),
    ({"RandomResizedCrop": {"size": 32, "scael": [0.1, 1.0]}}, "did you mean 'scale'"),
    ({"ColorJitter": {"brightness": -0.1}}, "brightness must be >= 0"),
    ({"ColorJitter": {"hue": 0.7}}, "hue must lie within [-0.5, 0.5]"),
    ({"ColorJitter": {"contrast": "a lot"}}, "contrast must be a number or [min, max]"),
    ({"RandomRotation": {"degrees": 10, "fill": 300}}, "fill must be an int in [0, 255]"),
    ({"RandomRotation": {}}, "needs parameter(s) degrees"),
    ({"RandomErasing": {"value": "noise"}}, "value must be an int in [0, 255] or 'random'"),
    ({"RandomErasing": {"p": 2}}, "p must be a probability"),
    ({"RandomVerticalFlip": {"p": True}}, "p must be a probability"),
    ({"RandomGrayscale": {"p": -1}}, "p must be a probability"),
])
def test_parameter_errors_are_one_line(entry, fragment):
    with pytest.raises(ConfigError) as e:
        build_transforms([entry], where="Transforms.train")
    msg = str(e.value)
    assert fragment in msg and "Transforms.train[0]" in msg and "\n" not in msg


def test_photo_config_loads_and_its_pipelines_run(tmp_path):
    """configs/resnet18_folder.yml: valid, and its pipelines take photos of mixed sizes to 3x128x128."""
    cfg = load_config(os.path.join(ROOT, "configs", "resnet18_folder.yml"))
    assert cfg["Arch"]["name"] == "resnet18" and cfg["Arch"]["pretrained"] == "imagenet"
    names = [next(iter(e)) for e in cfg["Transforms"]["train"]]
    assert {"RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter"} <= set(names)
    for cls, shape in (("cat", (90, 120)), ("dog", (150, 100))):
        os.makedirs(tmp_path / cls)
        for i in range(6):
            Image.fromarray(photo(*shape, seed=i)).save(tmp_path / cls / f"{i}.jpg")
    cfg = load_config(os.path.join(ROOT, "configs", "resnet18_folder.yml"),
                      [f"Data.data_dir={tmp_path}", "Data.val_split=0.34"])
    b = build_datasets(cfg)
    assert b.num_classes == 2 and b.image_size == 128 and b.in_channels == 3
    x, _ = b.train[0]
    v, _ = b.val[0]
    assert x.shape == v.shape == (3, 128, 128) and x.dtype == np.float32
    assert b.mean == [0.485, 0.456, 0.406]
