"""Export and inference: files and inference.yml, parity with the training-time network (grey digits
and RGB image files), tools/export.py and tools/infer.py, one-line errors, PaddleX where installed."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image
from tool_asserts import assert_user_error as one_line_error

from utils.config import load_config
from utils.deploy import Predictor, collect_inputs, export_run, load_run_network
from utils.errors import UserError
from utils.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["Global.verbose=0", "Doctor.enable=false", "VisualDL.enable=false"]


def tool(name, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def in_process_error(main, argv, capsys):
    """Run a tool's main in this process: it must exit 2 with one 'error:' line."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def import_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A 2-epoch cnn on digits (grey 8x8), exported by tools/export.py into <run>/inference."""
    out = tmp_path_factory.mktemp("digits")
    cfg = load_config(os.path.join(ROOT, "configs/cnn_digits.yml"),
                      [f"Global.output_dir={out}", "Global.run_name=r", "Global.epochs=2", *FAST])
    run_dir = train(cfg, print_fn=lambda *a, **k: None)["run_dir"]
    p = tool("export.py", run_dir)
    assert p.returncode == 0, p.stdout + p.stderr
    _, bundle, network = load_run_network(run_dir)
    # the val images saved as 8-bit greyscale PNGs, named by their label
    png_dir = out / "pngs"
    png_dir.mkdir()
    paths = []
    for i in range(len(bundle.val)):
        img, lab = bundle.val.raw(i)
        path = png_dir / f"{i:03d}_{lab}.png"
        Image.fromarray(img[:, :, 0]).save(path)
        paths.append(str(path))
    return {"run": run_dir, "export": os.path.join(run_dir, "inference"), "stdout": p.stdout, "bundle": bundle,
            "network": network, "pngs": paths, "tmp": out}


@pytest.fixture(scope="module")
def predictor(digits):
    return Predictor(digits["export"])


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """cnn_folder on 36x36 RGB JPEG class folders, eval Resize 36 -> CenterCrop 32, exported in-process."""
    from utils.data.synthetic import make_class_folders

    tmp = tmp_path_factory.mktemp("rgb")
    names = make_class_folders(str(tmp / "imgs"), ["cat", "dog", "fox"], 20, size=36, fmt="jpg")
    cfg = load_config(os.path.join(ROOT, "configs/cnn_folder.yml"), [
        f"Global.output_dir={tmp}", "Global.run_name=r", "Global.epochs=1", f"Data.data_dir={tmp / 'imgs'}",
        "Data.val_split=0.25", "DataLoader.batch_size=16",
        "Transforms.eval=[{Resize: {size: 36}}, {CenterCrop: {size: 32}}, Normalize]", *FAST])
    run_dir = train(cfg, print_fn=lambda *a, **k: None)["run_dir"]
    info = export_run(run_dir, checkpoint="latest", out_dir=str(tmp / "exported"))
    _, bundle, network = load_run_network(run_dir, "latest")
    return {"run": run_dir, "info": info, "bundle": bundle, "network": network, "names": names, "tmp": tmp}


def network_outputs(network, tensors):
    with paddle.no_grad():
        return paddle.nn.functional.softmax(network(paddle.to_tensor(np.asarray(tensors, np.float32))), -1).numpy()


# --------------------------------------------------------------------------- files and yml

def test_export_tool_writes_files_and_reports_parity(digits):
    files = sorted(os.listdir(digits["export"]))
    assert files == ["inference.json", "inference.pdiparams", "inference.yml"]
    # nothing left over from the temporary directory
    assert not [f for f in os.listdir(digits["run"]) if f.startswith(".inference")]
    out = digits["stdout"]
    assert "parity (ok): 16 val images" in out and "top-1 identical" in out
    assert "paddlex.create_model(model_name='PP-LCNet_x1_0'" in out


def test_inference_yml_is_paddlex_layout_with_eval_preprocessing(digits):
    y = yaml.safe_load(open(os.path.join(digits["export"], "inference.yml")))
    cfg = load_config(os.path.join(digits["run"], "config.yml"))
    assert y["Global"]["model_name"] == "PP-LCNet_x1_0"
    ops = y["PreProcess"]["transform_ops"]
    assert [next(iter(o)) for o in ops] == ["ResizeImage", "NormalizeImage", "ToCHWImage"]
    # digits' eval pipeline has no Resize: the ResizeImage PaddleX needs is to the images' own 8x8
    assert ops[0]["ResizeImage"] == {"size": [8, 8], "backend": "pil", "interpolation": "BILINEAR"}
    norm = ops[1]["NormalizeImage"]
    assert norm["mean"] == cfg["Transforms"]["mean"] * 3 and norm["std"] == cfg["Transforms"]["std"] * 3
    assert norm["scale"] == pytest.approx(1 / 255) and norm["channel_num"] == 3 and norm["order"] == ""
    assert y["PostProcess"]["Topk"] == {"topk": 5, "label_list": [str(i) for i in range(10)]}
    ex = y["Export"]
    assert ex["input"]["shape"] == [-1, 3, 8, 8] and ex["network_channels"] == 1
    assert ex["output"] == "probabilities" and ex["paddlex_compatible"] is True
    assert ex["arch"] == "cnn" and ex["checkpoint"].endswith("best_model")


# --------------------------------------------------------------------------- parity

def test_parity_on_all_val_images_any_batch_size(digits, predictor):
    ds = digits["bundle"].val
    tensors = np.stack([ds[i][0] for i in range(len(ds))])
    ref = network_outputs(digits["network"], tensors)
    x = np.stack([predictor.preprocess(ds.raw(i)[0]) for i in range(len(ds))])
    got = predictor.run(x)                        # all 360 in one batch (InputSpec batch dim None)
    assert np.abs(got - ref).max() <= 1e-5        # measured: 0.0 (bit-identical with oneDNN off)
    assert (got.argmax(1) == ref.argmax(1)).all()
    one = np.concatenate([predictor.run(x[i:i + 1]) for i in range(5)])
    assert np.abs(one - got[:5]).max() <= 1e-6
    # oneDNN (Paddle Inference's CPU default, off in Predictor): close, not identical
    fast = Predictor(digits["export"], mkldnn=True).run(x)
    assert np.abs(fast - ref).max() <= 2e-5 and (fast.argmax(1) == ref.argmax(1)).all()
    # arrays and PIL images go through the same decoding rules as files
    img = ds.raw(0)[0]
    for item in (img, img[:, :, 0], np.repeat(img, 3, axis=2), Image.fromarray(img[:, :, 0]).convert("RGB")):
        np.testing.assert_array_equal(predictor.preprocess(item), x[0])


def test_png_of_a_digit_gives_the_eval_loader_tensor(digits, predictor):
    ds = digits["bundle"].val
    for i in (0, 1, 2):
        x = predictor.preprocess(digits["pngs"][i])
        assert x.shape == (3, 8, 8) and (x[0] == x[1]).all() and (x[1] == x[2]).all()
        # the program's grey conversion of R = G = B is exactly G: the network sees the loader's tensor
        np.testing.assert_array_equal(x[1:2], ds[i][0])
    res = predictor.predict(digits["pngs"], topk=3)
    ref = network_outputs(digits["network"], np.stack([ds[i][0] for i in range(len(ds))]))
    assert [r["class_ids"][0] for r in res] == list(ref.argmax(1))
    assert max(abs(r["scores"][0] - ref[i].max()) for i, r in enumerate(res)) <= 1e-5
    assert all(len(r["label_names"]) == 3 and r["scores"] == sorted(r["scores"], reverse=True) for r in res)


def test_rgb_image_files_parity_with_resize_and_crop(rgb):
    info, ds = rgb["info"], rgb["bundle"].val
    assert info["parity"]["ok"] and info["parity"]["max_abs_diff"] <= 1e-5
    ops = info["config"]["PreProcess"]["transform_ops"]
    assert ops[0] == {"ResizeImage": {"size": [36, 36], "backend": "pil", "interpolation": "BILINEAR"}}
    assert ops[1] == {"CropImage": {"size": [32, 32]}}
    assert len(set(ops[2]["NormalizeImage"]["mean"])) == 3  # per-channel stats of the RGB data
    assert info["config"]["PostProcess"]["Topk"]["label_list"] == rgb["names"]
    pred = Predictor(info["dir"])
    paths = [ds.path(i) for i in range(len(ds))]
    assert all(p.endswith(".jpg") for p in paths)
    x = np.stack([pred.preprocess(p) for p in paths])      # decoded from the files, yml preprocessing
    tensors = np.stack([ds[i][0] for i in range(len(ds))])  # the eval loader
    np.testing.assert_array_equal(x, tensors)
    got, ref = pred.run(x), network_outputs(rgb["network"], tensors)
    assert np.abs(got - ref).max() <= 1e-5 and (got.argmax(1) == ref.argmax(1)).all()
    # an image of another size and shape goes through the same Resize -> CenterCrop
    odd = rgb["tmp"] / "odd.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (50, 70, 3), np.uint8)).save(odd)
    assert pred.preprocess(str(odd)).shape == (3, 32, 32)


def test_grey_folder_with_resize_parity_untrained(tmp_path):
    """1-channel PNG folders of another size: PIL resizes the loader's L image and the predictor's
    replicated RGB one identically, and the program's grey conversion is exact."""
    from utils.build import build_network
    from utils.data import build_datasets
    from utils.data.synthetic import make_class_folders
    from utils.deploy import export_network, parity_check

    make_class_folders(str(tmp_path / "g"), 2, 6, size=20, fmt="png", gray=True)
    cfg = load_config(os.path.join(ROOT, "configs/cnn_folder.yml"),
                      [f"Data.data_dir={tmp_path / 'g'}", "Data.image_size=16", "Data.val_split=0.5",
                       "Transforms.train=[Normalize]"])
    bundle = build_datasets(cfg)
    assert bundle.in_channels == 1
    network = build_network(cfg, bundle)
    network.eval()
    info = export_network(network, bundle, str(tmp_path / "exp"))
    assert info["config"]["PreProcess"]["transform_ops"][0]["ResizeImage"]["size"] == [16, 16]
    ds = bundle.val
    paths = [ds.path(i) for i in range(len(ds))]
    res = parity_check(network, Predictor(info["dir"]), paths, np.stack([ds[i][0] for i in range(len(ds))]))
    assert res["input_max_abs_diff"] == 0 and res["max_abs_diff"] <= 1e-5 and res["top1_match"], res


def test_logits_export_and_random_eval_op_refused(digits, tmp_path):
    info = export_run(digits["run"], out_dir=str(tmp_path / "logits"), softmax=False, check_images=32)
    assert info["config"]["Export"]["output"] == "logits" and info["parity"]["ok"]
    p = Predictor(info["dir"])
    x = np.stack([p.preprocess(path) for path in digits["pngs"][:4]])
    assert np.allclose(p.probabilities(x).sum(1), 1, atol=1e-6)
    with pytest.raises(UserError, match="RandomHorizontalFlip, a random op"):
        export_run(digits["run"], out_dir=str(tmp_path / "x"), overrides=["Transforms.eval=[RandomHorizontalFlip, Normalize]"])
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- tools/infer.py

def test_infer_tool_on_folder_and_file_list(digits, tmp_path):
    lst = tmp_path / "list.txt"
    # PaddleClas lines 'path label', relative to the list's folder, plus a plain path line
    rel = [os.path.relpath(p, tmp_path) for p in digits["pngs"][:6]]
    lst.write_text("".join(f"{r} {os.path.basename(r)[4]}\n" for r in rel[:5]) + f"{rel[5]}\n")
    out_json = tmp_path / "pred.json"
    p = tool("infer.py", digits["run"], lst, os.path.dirname(digits["pngs"][0]), "--topk", "2", "--json", out_json)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("image") and "true" in lines[0]
    assert "top-1 accuracy on the 5 labelled images" in p.stdout
    data = json.load(open(out_json))["predictions"]
    assert len(data) == 6 + len(digits["pngs"])
    assert data[0]["true_label"] == int(os.path.basename(rel[0])[4]) and "true_label" not in data[5]
    assert all(len(d["label_names"]) == 2 and d["label_names"][0] in [str(i) for i in range(10)] for d in data)
    # the printed labels are the class names, with probabilities
    first = lines[1].split()
    assert first[-4] == data[0]["label_names"][0] and float(first[-3]) == pytest.approx(data[0]["scores"][0], abs=1e-4)


def test_collect_inputs_recurses_and_reads_lists(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.png", "a/b/y.JPG", "a/note.txt"):
        (tmp_path / name).write_bytes(b"")
    got = collect_inputs([str(tmp_path / "a")])
    assert [os.path.relpath(p, tmp_path) for p, _ in got] == ["a/x.png", os.path.join("a", "b", "y.JPG")]
    lst = tmp_path / "l.txt"
    lst.write_text("# comment\na/x.png 3\n\na/b/y.JPG\n")
    assert [(os.path.relpath(p, tmp_path), lab) for p, lab in collect_inputs([str(lst)])] == [
        ("a/x.png", 3), (os.path.join("a", "b", "y.JPG"), None)]


def test_bad_inputs_are_one_line_errors(digits, tmp_path, capsys):
    infer, export = import_tool("infer").main, import_tool("export").main
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    lst = tmp_path / "l.txt"
    lst.write_text("missing.png 1\n")
    run_no_export = tmp_path / "run"
    run_no_export.mkdir()
    (run_no_export / "config.yml").write_text(open(os.path.join(digits["run"], "config.yml")).read())
    cases = [
        (infer, [digits["run"], str(tmp_path / "nope.png")], ["nope.png", "no such image, folder or file list"]),
        (infer, [digits["run"], str(empty)], [str(empty), "no .jpg/.jpeg/.png/.bmp images"]),
        (infer, [digits["run"], str(bad)], ["unreadable image", "bad.png"]),
        (infer, [digits["run"], str(lst)], ["l.txt:1", "missing.png"]),
        (infer, [str(run_no_export), digits["pngs"][0]], ["no exported model", "tools/export.py"]),
        (infer, [str(tmp_path / "nowhere"), digits["pngs"][0]], ["nowhere", "no such export or run directory"]),
        (infer, [digits["run"], digits["pngs"][0], "--topk", "0"], ["--topk must be >= 1"]),
        (infer, [os.path.join(digits["run"], "best_model.pdparams"), digits["pngs"][0]],
         ["is a training checkpoint", "tools/export.py"]),
        (export, [digits["run"], "--checkpoint", "epoch_7"], ["no epoch_7.pdparams", "checkpoints here:"]),
        (export, [str(run_no_export)], ["no best_model.pdparams"]),
        (export, [digits["run"], "--out", str(lst)], ["is a file"]),
        (export, [digits["run"], "--out", str(tmp_path)], ["non-empty directory without an exported model"]),
    ]
    for main, argv, needles in cases:
        line = in_process_error(main, argv, capsys)
        for n in needles:
            assert n in line, (argv, line)
    # and through a real process: no traceback, one line
    one_line_error(tool("infer.py", digits["run"], bad), "unreadable image")


def test_big_image_for_a_model_without_resize_is_resized(digits, predictor, tmp_path):
    # digits' ResizeImage to 8x8 (a no-op for 8x8 images) also brings a larger drawing to 8x8
    big = tmp_path / "big.png"
    Image.fromarray(np.kron(np.asarray(Image.open(digits["pngs"][0])), np.ones((4, 4), np.uint8))).save(big)
    assert predictor.preprocess(str(big)).shape == (3, 8, 8)


# --------------------------------------------------------------------------- PaddleX

def _paddlex_missing():
    return [m for m in ("paddlex", "cv2", "pypdfium2") if importlib.util.find_spec(m) is None]


def test_paddlex_runs_the_export_offline(digits, predictor, rgb):
    """Runs in .ci/run's separate PaddleX environment (requirements-paddlex.txt, REQUIRE_PADDLEX=1)."""
    missing = _paddlex_missing()
    if missing:
        why = f"{', '.join(missing)} not installed (pip install -r requirements-paddlex.txt, in its own venv)"
        if os.environ.get("REQUIRE_PADDLEX") == "1":
            pytest.fail(f"REQUIRE_PADDLEX=1 but {why}")
        pytest.skip(why)
    import paddlex

    for export_dir, images in ((digits["export"], digits["pngs"][:8]),
                               (rgb["info"]["dir"], [rgb["bundle"].val.path(i) for i in range(8)])):
        ours = Predictor(export_dir)
        ref = ours.predict(images, topk=3)
        model = paddlex.create_model(model_name="PP-LCNet_x1_0", model_dir=export_dir, device="cpu")
        got = [dict(r) for r in model.predict(images, batch_size=4)]
        assert [g["label_names"][:3] for g in got] == [r["label_names"] for r in ref]
        # PaddleX rounds scores to 5 decimals and uses oneDNN on CPU by default
        for g, r in zip(got, ref):
            assert np.abs(np.asarray(g["scores"][:3], np.float64) - r["scores"]).max() <= 1e-5
