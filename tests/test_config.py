import os
import textwrap

import pytest
import yaml

from utils.config import SCHEMA, dump_config, load_config, parse_override, schema_markdown, validate
from utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, name, text):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_defaults_filled_and_values_kept(tmp_path):
    cfg = load_config(write(tmp_path, "a.yml", """
        Global: {epochs: 7}
        Optimizer: {name: Adam, lr: 0.003}
    """))
    assert cfg["Global"]["epochs"] == 7
    assert cfg["Optimizer"]["name"] == "Adam" and cfg["Optimizer"]["lr"] == 0.003
    assert cfg["Global"]["seed"] == SCHEMA["Global"]["seed"].default
    assert cfg["_meta"]["config_name"] == "a"


def test_base_chain_merges_in_order_and_file_wins(tmp_path):
    write(tmp_path, "_base_/one.yml", "Global: {epochs: 1, seed: 1}\nOptimizer: {lr: 0.5}\n")
    write(tmp_path, "_base_/two.yml", "Global: {epochs: 2}\n")
    cfg = load_config(write(tmp_path, "c.yml", """
        _base_: [_base_/one.yml, _base_/two.yml]
        Optimizer: {momentum: 0.8}
    """))
    assert cfg["Global"]["epochs"] == 2          # two.yml after one.yml
    assert cfg["Global"]["seed"] == 1            # only in one.yml
    assert cfg["Optimizer"]["lr"] == 0.5 and cfg["Optimizer"]["momentum"] == 0.8


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.yml", "_base_: b.yml\n")
    write(tmp_path, "b.yml", "_base_: a.yml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yml"))


def test_overrides_parse_with_safe_load(tmp_path):
    path = write(tmp_path, "a.yml", "Global: {epochs: 3}\n")
    cfg = load_config(path, ["Global.epochs=9", "Optimizer.lr=1e-3", "LRScheduler.milestones=[2, 4]",
                             "Data.classes=[0, 1]", "Global.run_name=x"])
    assert cfg["Global"]["epochs"] == 9
    assert cfg["Optimizer"]["lr"] == pytest.approx(1e-3)  # '1e-3' is a str to PyYAML; accepted as float
    assert cfg["LRScheduler"]["milestones"] == [2, 4]
    assert cfg["Data"]["classes"] == [0, 1]
    assert load_config(path, ["Global.run_name=off", "Arch.name=123"])["Global"]["run_name"] == "off"
    assert parse_override("Arch.name=!!python/object:os.system") == (["Arch", "name"], "!!python/object:os.system")


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    path = write(tmp_path, "bad.yml", """
        Global:
          epochs: 3
        Optimizer:
          name: Adam
          lrr: 0.1
    """)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "Optimizer.lrr" in msg and "bad.yml:6" in msg and "did you mean 'lr'" in msg


def test_unknown_section_and_override_key(tmp_path):
    path = write(tmp_path, "a.yml", "Optimzer: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match="did you mean 'Optimizer'"):
        load_config(path)
    path = write(tmp_path, "b.yml", "Global: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="Global.epoch'.*did you mean 'epochs'"):
        load_config(path, ["Global.epoch=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(path, ["Global.epochs"])


def test_wrong_type_names_key_and_expected_type(tmp_path):
    path = write(tmp_path, "a.yml", "Global: {epochs: three}\n")
    with pytest.raises(ConfigError, match=r"Global.epochs: expected int, got str 'three'"):
        load_config(path)
    with pytest.raises(ConfigError, match="expected bool"):
        load_config(write(tmp_path, "b.yml", "DataLoader: {shuffle: 1}\n"))
    with pytest.raises(ConfigError, match="not one of"):
        load_config(write(tmp_path, "c.yml", "Optimizer: {name: Adamm}\n"))
    # int where float is expected is fine
    assert load_config(write(tmp_path, "d.yml", "Optimizer: {lr: 1}\n"))["Optimizer"]["lr"] == 1.0


def test_malformed_yaml_reports_line(tmp_path):
    path = write(tmp_path, "a.yml", "Global:\n  epochs: 3\n   seed: 1\n")
    with pytest.raises(ConfigError, match=r"a.yml:3: malformed YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yml"))


def test_arch_is_open_for_model_kwargs(tmp_path):
    cfg = load_config(write(tmp_path, "a.yml", "Arch: {name: gmlp_tiny, depth: 2}\n"))
    from utils.config import model_kwargs
    assert model_kwargs(cfg) == {"depth": 2}


def test_dump_roundtrip_reproduces_config(tmp_path):
    cfg = load_config(write(tmp_path, "a.yml", "Global: {epochs: 4}\nArch: {name: mlp, hidden: [32, 16]}\n"))
    out = str(tmp_path / "run.yml")
    dump_config(cfg, out)
    again = load_config(out)
    strip = lambda c: {k: v for k, v in c.items() if k != "_meta"}  # noqa: E731
    assert strip(again) == strip(cfg)
    assert "_base_" not in yaml.safe_load(open(out))


def test_validate_rejects_non_mapping_section():
    with pytest.raises(ConfigError, match="must be a mapping"):
        validate({"Global": [1, 2]})


def test_config_reference_is_up_to_date():
    with open(os.path.join(ROOT, "configs", "README.md"), encoding="utf-8") as f:
        assert f.read().strip() == schema_markdown().strip(), "run: python tools/config_doc.py --write"


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".yml")))
def test_shipped_configs_load(name):
    import models
    from models.registry import check_kwargs
    from utils.config import model_kwargs
    cfg = load_config(os.path.join(ROOT, "configs", name))
    check_kwargs(cfg["Arch"]["name"], model_kwargs(cfg))
    assert cfg["Arch"]["name"] in models.list_models()


def test_tool_output_cut_by_a_closed_pipe_exits_quietly():
    # `python tools/eval.py RUN | head -1`: the reader leaves; no BrokenPipeError traceback
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from utils.errors import run_tool\n"
            "@run_tool\n"
            "def main():\n"
            "    for i in range(200000):\n"
            "        print('line', i)\n"
            "main()\n") % root
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.readline()
    p.stdout.close()  # like `head -1` exiting
    err = p.stderr.read().decode()
    p.wait(timeout=30)
    assert first == b"line 0\n"
    assert p.returncode == 141 and "Traceback" not in err, err
