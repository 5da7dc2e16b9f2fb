"""The batched in-memory loader (DataLoader.batched): batch ops against numpy references, the
alternating flip, determinism, eval equal to the per-sample path, the folder cache, errors, training."""
import json
import math
import os

import numpy as np
import pytest

from utils.config import load_config, validate
from utils.data import build_datasets, build_eval_loader, build_loaders
from utils.data import cache as cache_module
from utils.data.batched import BATCH_OPS, BatchedLoader, BatchPipeline, crop_batch, flip_batch, pad_batch
from utils.data.synthetic import make_cifar_tarball, make_class_folders, make_filelist
from utils.data.transforms import build_transforms
from utils.errors import ConfigError, DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.1]


def cfg_of(data, train=None, eval_ops=None, **loader):
    body = {"Data": data, "DataLoader": {"batched": True, **loader}}
    body["Transforms"] = {"train": train or ["Normalize"], "eval": eval_ops or ["Normalize"]}
    return validate(body)


@pytest.fixture(scope="module")
def tar(tmp_path_factory):
    return make_cifar_tarball(str(tmp_path_factory.mktemp("c10") / "c10.tar.gz"), n_train=300, n_test=50)


def known_images(n, h=8, w=8, c=3):
    """Distinct nonzero pixels: every pixel value tells where it came from."""
    base = (np.arange(h * w * c).reshape(h, w, c) % 250 + 1).astype(np.uint8)
    return np.stack([np.roll(base, i, axis=2) for i in range(n)])


def loader_on(images, ops, batch_size=4, shuffle=False, train=True, seed=0, mean=None, std=None):
    compose = build_transforms(ops, mean, std, where="t")
    pipe = BatchPipeline(compose, images.shape[1:3], images.shape[3], train, "t", len(images), seed)
    return BatchedLoader(images, np.arange(len(images)), np.arange(len(images)), pipe, batch_size,
                         shuffle, False, train, to_tensor=False)


def as_uint8(x):
    """A batch without Normalize (pixel / 255) back to uint8 N x H x W x C."""
    return np.rint(x * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def epoch(loader, seed):
    np.random.seed(seed)
    xs, ys = zip(*loader)
    return np.concatenate(xs), np.concatenate(ys).ravel()


# --------------------------------------------------------------------------- batch functions


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "symmetric"])
def test_crop_matches_numpy_reference(mode):
    x = known_images(5)
    tops, lefts = np.array([0, 4, 2, 1, 3]), np.array([4, 0, 2, 3, 1])
    out = crop_batch(pad_batch(x, 2, mode), tops, lefts, (8, 8))
    assert out.shape == x.shape and out.dtype == np.uint8
    for i in range(5):
        ref = np.pad(x[i], ((2, 2), (2, 2), (0, 0)), mode=mode)[tops[i]:tops[i] + 8, lefts[i]:lefts[i] + 8]
        assert np.array_equal(out[i], ref)
    # the per-sample op pads the same way
    np.random.seed(3)
    op = build_transforms([{"RandomCrop": {"size": 8, "padding": 2, "padding_mode": mode}}]).ops[0]
    single = op(x[0])
    padded = np.pad(x[0], ((2, 2), (2, 2), (0, 0)), mode=mode)
    assert any(np.array_equal(single, padded[t:t + 8, s:s + 8]) for t in range(5) for s in range(5))


def test_random_translate_moves_by_at_most_padding_and_keeps_content():
    x = known_images(64)
    loader = loader_on(x, [{"RandomCrop": {"size": 8, "padding": 2}}], batch_size=64)
    out = as_uint8(epoch(loader, 0)[0])
    shifts = set()
    for i in range(64):
        padded = np.pad(x[i], ((2, 2), (2, 2), (0, 0)))
        found = [(t - 2, s - 2) for t in range(5) for s in range(5) if np.array_equal(out[i], padded[t:t + 8, s:s + 8])]
        assert len(found) == 1  # one window of the zero-padded image: content kept, shift within +-2
        shifts.add(found[0])
    assert len(shifts) > 10


def test_flip_batch():
    x = known_images(4)
    want = np.stack([x[0][:, ::-1], x[1], x[2][:, ::-1], x[3]])
    assert np.array_equal(flip_batch(x.copy(), np.array([True, False, True, False])), want)
    assert np.array_equal(flip_batch(x.copy(), np.array([False, True, False, False]), axis=1)[1], x[1][::-1])
    # on a crop's output (a view) too
    cropped = crop_batch(x, np.zeros(4, int), np.zeros(4, int), (8, 8))
    assert np.array_equal(cropped, x)
    assert np.array_equal(flip_batch(cropped, np.array([True, False, True, False])), want)
    loader = loader_on(x, [{"RandomHorizontalFlip": {"p": 1.0}}])
    assert np.array_equal(as_uint8(epoch(loader, 0)[0]), x[:, :, ::-1])


def test_alternating_flip_every_sample_once_per_two_epochs():
    n = 40
    x = known_images(n)
    loader = loader_on(x, [{"RandomHorizontalFlip": {"mode": "alternate"}}], batch_size=16, shuffle=True, seed=5)
    flipped = []
    for e in range(3):
        loader.set_epoch(e)
        out, ids = epoch(loader, 100 + e)  # a shuffled order every epoch
        out = as_uint8(out)[np.argsort(ids)]
        assert sorted(ids) == list(range(n))
        is_flipped = np.array([np.array_equal(out[i], x[i][:, ::-1]) for i in range(n)])
        assert all(is_flipped[i] or np.array_equal(out[i], x[i]) for i in range(n))
        flipped.append(is_flipped)
    assert flipped[0].sum() == n // 2
    assert np.array_equal(flipped[0], ~flipped[1])      # each sample flipped in exactly one of epochs 0, 1
    assert np.array_equal(flipped[2], flipped[0])       # the pattern repeats
    other = loader_on(x, [{"RandomHorizontalFlip": {"mode": "alternate"}}], seed=6)
    other.set_epoch(0)
    out, ids = epoch(other, 0)
    assert not np.array_equal(np.array([np.array_equal(o, x[i][:, ::-1]) for o, i in zip(as_uint8(out), ids)]),
                              flipped[0])           # Global.seed picks the half
    # without set_epoch a second pass repeats the flips, and says so
    loader.set_epoch(1)
    epoch(loader, 0)
    with pytest.warns(RuntimeWarning, match="set_epoch"):
        epoch(loader, 0)


@pytest.mark.parametrize("size", [3, 6, 8])
def test_cutout_zeroes_exactly_one_square(size):
    x = known_images(32)
    out = as_uint8(epoch(loader_on(x, [{"Cutout": {"size": size}}], batch_size=32), 1)[0])
    corners = set()
    for i in range(32):
        zero = (out[i] == 0).all(axis=2)
        rows, cols = np.flatnonzero(zero.any(axis=1)), np.flatnonzero(zero.any(axis=0))
        assert zero.sum() == size * size and len(rows) == size and len(cols) == size
        assert rows[-1] - rows[0] == size - 1 and cols[-1] - cols[0] == size - 1
        assert np.array_equal(out[i][~zero], x[i][~zero])  # the rest untouched
        corners.add((rows[0], cols[0]))
    assert len(corners) == 1 if size == 8 else len(corners) > 3
    single = build_transforms([{"Cutout": {"size": size}}]).ops[0](x[0])
    assert (single == 0).all(axis=2).sum() == size * size


def test_random_erasing_batch_fills_one_box_per_image():
    x = known_images(32, 16, 16)
    out = as_uint8(epoch(loader_on(x, [{"RandomErasing": {"p": 1.0}}], batch_size=32), 2)[0])
    for i in range(32):
        zero = (out[i] == 0).all(axis=2)
        rows, cols = np.flatnonzero(zero.any(axis=1)), np.flatnonzero(zero.any(axis=0))
        assert 0 < zero.sum() == len(rows) * len(cols) < 16 * 16  # one filled rectangle
        assert np.array_equal(out[i][~zero], x[i][~zero])


# --------------------------------------------------------------------------- the loaders


def test_shapes_dtypes_and_normalized_range(tar):
    cfg = cfg_of({"name": "cifar10", "data_dir": tar}, [{"RandomCrop": {"size": 32, "padding": 4}},
                 {"RandomHorizontalFlip": {}}, {"Normalize": {"mean": MEAN, "std": STD}}], batch_size=64)
    b = build_datasets(cfg)
    train, val = build_loaders(cfg, b)
    assert len(train) == math.ceil(len(b.train) / 64) and len(val) == 1
    np.random.seed(0)
    batches = list(train)
    x, y = batches[0]
    assert tuple(x.shape) == (64, 3, 32, 32) and str(x.dtype) == "paddle.float32"
    assert tuple(y.shape) == (64, 1) and str(y.dtype) == "paddle.int64"
    assert sum(bx.shape[0] for bx, _ in batches) == len(b.train)
    x = x.numpy()
    for c in range(3):
        lo, hi = (0 - MEAN[c]) / STD[c], (1 - MEAN[c]) / STD[c]
        assert lo - 1e-5 <= x[:, c].min() and x[:, c].max() <= hi + 1e-5
    assert x.std() > 0.5  # normalized, not [0, 1]


def test_deterministic_per_seed_and_epoch(tar):
    cfg = cfg_of({"name": "cifar10", "data_dir": tar}, [{"RandomCrop": {"size": 32, "padding": 4}},
                 {"RandomHorizontalFlip": {}}, {"Cutout": {"size": 8}}, "Normalize"], batch_size=100)
    train, _ = build_loaders(cfg, build_datasets(cfg))
    a = [[t.numpy() for t in batch] for batch in _seeded(train, 42)]
    b = [[t.numpy() for t in batch] for batch in _seeded(train, 42)]
    c = [[t.numpy() for t in batch] for batch in _seeded(train, 43)]
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not np.array_equal(a[0][1], c[0][1]) and not np.array_equal(a[0][0], c[0][0])
    # a resumed epoch that skips two batches continues with the uninterrupted run's
    np.random.seed(42)
    it = iter(train)
    next(it), next(it)
    assert np.array_equal(next(it)[0].numpy(), a[2][0])


def _seeded(loader, seed):
    np.random.seed(seed)
    return list(loader)


def test_eval_loader_ordered_complete_equal_to_per_sample(tar):
    ops = [{"CenterCrop": {"size": 28}}, {"Normalize": {}}]
    cfg = cfg_of({"name": "cifar10", "data_dir": tar}, [{"RandomCrop": {"size": 28}}, "Normalize"], ops,
                 eval_batch_size=64)
    b = build_datasets(cfg)
    per_sample = dict(cfg, DataLoader=dict(cfg["DataLoader"], batched=False))
    for ds in (b.val, b.test):
        batched = build_eval_loader(cfg, ds)
        assert isinstance(batched, BatchedLoader)
        xb = np.concatenate([x.numpy() for x, _ in batched])
        yb = np.concatenate([y.numpy() for _, y in batched]).ravel()
        xs = np.concatenate([x.numpy() for x, _ in build_eval_loader(per_sample, ds)])
        assert xb.shape == (len(ds), 3, 28, 28) and np.array_equal(yb, ds.labels)
        assert np.abs(xb - xs).max() <= 1e-6
        again = np.concatenate([x.numpy() for x, _ in batched])
        assert np.array_equal(again, xb)


def test_file_store_decoded_once_into_an_array(tmp_path):
    # filelist data read at every access (preload false): the batched loaders decode it once
    make_filelist(str(tmp_path), 2, 6, 2, size=8)
    cfg = cfg_of({"name": "filelist", "data_dir": str(tmp_path), "preload": False}, batch_size=4)
    b = build_datasets(cfg)
    assert not b.train.preloaded
    train, val = build_loaders(cfg, b)
    per_sample = dict(cfg, DataLoader=dict(cfg["DataLoader"], batched=False))
    xb = np.concatenate([x.numpy() for x, _ in val])
    xs = np.concatenate([x.numpy() for x, _ in build_eval_loader(per_sample, b.val)])
    assert xb.shape == (4, 3, 8, 8) and np.abs(xb - xs).max() <= 1e-6
    np.random.seed(0)
    assert sorted(np.concatenate([y.numpy() for _, y in train]).ravel()) == sorted(b.train.labels)


def test_unsupported_ops_and_settings_are_config_errors(tar, tmp_path):
    data = {"name": "cifar10", "data_dir": tar}
    cfg = cfg_of(data, [{"ColorJitter": {"brightness": 0.2}}, "Normalize"])
    with pytest.raises(ConfigError, match=r"Transforms.train: ColorJitter has no batched version.*RandomCrop"):
        build_loaders(cfg, build_datasets(cfg))
    assert all(op in BATCH_OPS for op in ("RandomCrop", "RandomHorizontalFlip", "Cutout", "Normalize"))
    cfg = cfg_of(data, eval_ops=["RandomHorizontalFlip", "Normalize"])
    with pytest.raises(ConfigError, match=r"Transforms.eval: RandomHorizontalFlip is random"):
        build_loaders(cfg, build_datasets(cfg))
    cfg = cfg_of(dict(data, image_size=40))
    with pytest.raises(ConfigError, match=r"Resize to 40x40 of 32x32 images"):
        build_loaders(cfg, build_datasets(cfg))
    assert build_loaders(*(lambda c: (c, build_datasets(c)))(cfg_of(dict(data, image_size=32))))[0] is not None
    cfg = cfg_of(data)
    with pytest.raises(ConfigError, match="data parallel"):
        build_loaders(cfg, build_datasets(cfg), rank=0, world=2)
    # the alternating flip needs the batched loader
    cfg = cfg_of(data, [{"RandomHorizontalFlip": {"mode": "alternate"}}, "Normalize"])
    cfg["DataLoader"]["batched"] = False
    with pytest.raises(ConfigError, match="mode alternate needs the batched loader"):
        build_loaders(cfg, build_datasets(cfg))
    with pytest.raises(ConfigError, match="p 0.5"):
        build_transforms([{"RandomHorizontalFlip": {"mode": "alternate", "p": 0.3}}])
    # a folder is checked before its images are decoded
    make_class_folders(str(tmp_path / "f"), 2, 2, size=8)
    cfg = cfg_of({"name": "folder", "data_dir": str(tmp_path / "f")}, ["RandomRotation", "Normalize"])
    with pytest.raises(ConfigError, match=r"Transforms.train\[0\]: RandomRotation has no batched version"):
        build_datasets(cfg)
    assert not os.path.exists(tmp_path / "f" / ".cache")
    cfg = validate({"Global": {"task": "regression"}, "Loss": {"name": "mse"}, "Data": {"name": "diabetes"},
                    "DataLoader": {"batched": True}})
    with pytest.raises(ConfigError, match="image datasets"):
        build_loaders(cfg, build_datasets(cfg))


def test_folder_cache_written_reused_invalidated(tmp_path, monkeypatch, capsys):
    root = tmp_path / "imgs"
    make_class_folders(str(root), ["a", "b"], 6, size=8, fmt="png")
    cfg = cfg_of({"name": "folder", "data_dir": str(root), "val_split": 0.0})
    first = build_datasets(cfg)
    files = sorted(os.listdir(root / ".cache"))
    assert len(files) == 2 and all(f.startswith("folder-") for f in files)
    assert files[0] == files[1].replace(".npy", ".labels.npy")
    cached = np.load(root / ".cache" / files[1])
    assert cached.shape == (12, 8, 8, 3) and cached.dtype == np.uint8
    assert np.array_equal(cached[first.train.indices], first.train.store.images[first.train.indices])
    assert first.train.path(0).endswith(".png")

    calls = []
    real = cache_module.image_store
    monkeypatch.setattr(cache_module, "image_store", lambda *a: calls.append(1) or real(*a))
    again = build_datasets(cfg)
    assert calls == [] and np.array_equal(again.train.store.images, first.train.store.images)  # reused

    # a changed file: the stale cache is not read, and is replaced
    target = root / "b" / sorted(os.listdir(root / "b"))[0]
    from PIL import Image
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(target)
    changed = build_datasets(cfg)
    assert calls == [1]
    i = [changed.train.path(k) for k in range(len(changed.train))].index(str(target))
    assert (changed.train.raw(i)[0] == 7).all()
    new_files = sorted(os.listdir(root / ".cache"))
    assert len(new_files) == 2 and new_files != files

    # not writable (.cache is a file): decoded anyway, one note
    for f in new_files:
        os.remove(root / ".cache" / f)
    os.rmdir(root / ".cache")
    (root / ".cache").write_text("not a folder")
    capsys.readouterr()
    ro = build_datasets(cfg)
    err = capsys.readouterr().err
    assert err.count("note: cannot write the decoded-image cache") == 1
    assert np.array_equal(ro.train.store.images, changed.train.store.images)


def test_folder_of_mixed_sizes_refused(tmp_path):
    make_class_folders(str(tmp_path / "a"), ["x"], 2, size=8)
    make_class_folders(str(tmp_path / "b"), ["y"], 2, size=12)
    os.rename(tmp_path / "b" / "y", tmp_path / "a" / "y")
    with pytest.raises(DataError, match="2 sizes"):
        build_datasets(cfg_of({"name": "folder", "data_dir": str(tmp_path / "a")}))


def test_train_one_epoch_batched(tmp_path, tar):
    cfg = load_config(os.path.join(ROOT, "configs", "cnn_cifar10.yml"),
                      [f"Global.output_dir={tmp_path}", "Global.verbose=0", "Global.epochs=1",
                       f"Data.data_dir={tar}", "Data.download=false", "DataLoader.batched=true",
                       "DataLoader.batch_size=64", "Global.run_name=b"])
    from utils.trainer import train
    m = train(cfg, print_fn=lambda *a, **k: None)
    saved = json.load(open(os.path.join(m["run_dir"], "metrics.json")))
    last = saved["history"][-1]
    assert math.isfinite(last["loss"]) and 0.0 <= last["acc"] <= 1.0
    assert saved["global_step"] == math.ceil(270 / 64)


def test_trainer_tells_the_loader_each_epoch_also_after_resume(tmp_path, tar, monkeypatch):
    """The alternating flip follows the trainer's epoch: 0, 1 in one run; 2 when resumed for a third."""
    from utils.trainer import train

    seen = []
    orig = BatchedLoader.set_epoch
    monkeypatch.setattr(BatchedLoader, "set_epoch", lambda self, e: (seen.append(e), orig(self, e))[1])
    base = [f"Global.output_dir={tmp_path}", "Global.verbose=0", f"Data.data_dir={tar}", "Data.download=false",
            "DataLoader.batched=true", "DataLoader.batch_size=128", "Global.run_name=alt",
            "Transforms.train=[{RandomHorizontalFlip: {mode: alternate}}, {Normalize: {}}]"]
    cfg = load_config(os.path.join(ROOT, "configs", "cnn_cifar10.yml"), base + ["Global.epochs=2"])
    m = train(cfg, print_fn=lambda *a, **k: None)
    assert seen == [0, 1]
    seen.clear()
    cfg = load_config(os.path.join(ROOT, "configs", "cnn_cifar10.yml"),
                      base + ["Global.epochs=3", f"Global.checkpoints={m['run_dir']}"])
    train(cfg, print_fn=lambda *a, **k: None)
    assert seen == [2]
