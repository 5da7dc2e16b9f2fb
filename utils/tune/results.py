"""A study's results: ``trials.csv``, ``trials.md`` and ``best_config.yml`` in the study directory.

Written after every run of the tuner (also when it is interrupted), from whatever the study's
storage holds, so the files always cover every worker's trials.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from utils.config import dump_config, load_config
from utils.tune.space import edge_warnings, param_overrides, yaml_text
from utils.tune.storage import redact
from utils.tune.study_setup import TuneSetup

if TYPE_CHECKING:
    import optuna


def format_value(v: Any) -> str:
    """A parameter value for the console: floats to 4 significant digits, lists as YAML."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return yaml_text(v) if not isinstance(v, str) else v


def trial_rows(study: optuna.Study, space_keys: Iterable[str] = ()) -> tuple[list[dict], list[str]]:
    """One dict per trial: number, state, value, each parameter, steps, seconds, run_dir, reason."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    keys = list(space_keys)
    for t in trials:
        for k in t.user_attrs.get("config_params", t.params):
            if k not in keys:
                keys.append(k)
    for t in trials:
        params = t.user_attrs.get("config_params", t.params)
        row = {"number": t.number, "state": t.state.name, "value": t.value}
        for k in keys:
            row[k] = params.get(k, "")
        row["steps"] = int(t.user_attrs.get("steps", 0))
        row["seconds"] = round(t.duration.total_seconds(), 1) if t.duration else ""
        row["run_dir"] = t.user_attrs.get("run_dir", "")
        row["reason"] = t.user_attrs.get("fail_reason", "") if t.state.name != "COMPLETE" else ""
        rows.append(row)
    return rows, keys


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return yaml_text(v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def write_best_config(study: optuna.Study, setup: TuneSetup, path: str) -> optuna.trial.FrozenTrial | None:
    """``best_config.yml``: the config with the best trial's values, every key resolved, no ``_base_``.

    ``python tools/train.py -c best_config.yml`` trains it (into ``output/best_config/<timestamp>``).
    Returns the best FrozenTrial, or None when no trial completed.
    """
    try:
        best = study.best_trial
    except ValueError:
        return None
    params = best.user_attrs.get("config_params", best.params)
    overrides = best.user_attrs.get("overrides", setup.overrides)
    cfg = load_config(setup.config_path, [*overrides, *param_overrides(params)])
    dump_config(cfg, path)
    head = [f"# Best trial {best.number} of study '{setup.study_name}' ({setup.monitor} {best.value:.4f}), "
            f"config {setup.config_path}", "# " + " ".join(f"-o {o}" for o in [*overrides, *param_overrides(params)]),
            f"# Train it: python tools/train.py -c {path}"]
    with open(path, encoding="utf-8") as f:
        body = f.read()
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(head) + "\n" + body)
    os.replace(tmp, path)
    return best


def write_results(study: optuna.Study, setup: TuneSetup, print_fn: Callable[..., Any] = print) -> dict[str, Any]:
    """Write ``trials.csv``, ``trials.md`` and ``best_config.yml`` into the study directory; print a summary.

    Returns:
        ``{"csv", "md", "best_config", "best", "warnings", "total_steps", "counts"}``.
    """
    os.makedirs(setup.study_dir, exist_ok=True)
    rows, keys = trial_rows(study, setup.space)
    cols = ["number", "state", "value", *keys, "steps", "seconds", "run_dir", "reason"]
    csv_path = os.path.join(setup.study_dir, "trials.csv")
    with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (yaml_text(v) if isinstance(v, (list, dict)) else ("" if v is None else v))
                        for k, v in r.items()})
    os.replace(csv_path + ".tmp", csv_path)

    best_path = os.path.join(setup.study_dir, "best_config.yml")
    best = write_best_config(study, setup, best_path)
    warn = []
    if best is not None:
        warn = edge_warnings(setup.space, best.user_attrs.get("config_params", best.params),
                             use_grid=setup.sampler == "grid")
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    total_steps = sum(r["steps"] for r in rows)

    md = [f"# Study `{setup.study_name}`", "",
          f"- config `{setup.config_path}`" + (f" with `{' '.join('-o ' + o for o in setup.overrides)}`" if setup.overrides else ""),
          f"- search space `{setup.space_path}`; sampler `{setup.sampler}`; "
          f"{'maximize' if setup.mode == 'max' else 'minimize'} validation `{setup.monitor}` (best over each run)",
          f"- storage `{redact(setup.storage_url)}`",
          f"- {len(rows)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f"; {total_steps} training steps in all"]
    if best is not None:
        md += [f"- best: trial {best.number}, {setup.monitor} {best.value:.4f}; "
               f"`python tools/train.py -c {best_path}`"]
    md += [f"- HParams: `visualdl --logdir {setup.study_dir} --port 8040`, tab HParams",
           "- any trial alone: `python tools/train.py --resume <run_dir>` (continue) or "
           "`python tools/train.py -c <run_dir>/config.yml -o Global.run_name=again` (re-run)", ""]
    if warn:
        md += ["## Warnings", ""] + [f"- {w}" for w in warn] + [""]
    md += ["## Trials", "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    best_n = best.number if best is not None else None
    for r in rows:
        cells = [_cell(r[c]) for c in cols]
        if r["number"] == best_n:
            cells[1] += " (best)"
        md.append("| " + " | ".join(cells) + " |")
    md_path = os.path.join(setup.study_dir, "trials.md")
    with open(md_path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    os.replace(md_path + ".tmp", md_path)

    print_fn(f"{len(rows)} trials (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
             + f"), {total_steps} training steps")
    if best is not None:
        params = " ".join(f"{k}={format_value(v)}" for k, v in best.user_attrs.get("config_params", best.params).items())
        print_fn(f"best: trial {best.number} {setup.monitor} {best.value:.4f} [{params}] "
                 f"run {best.user_attrs.get('run_dir', '?')}")
        print_fn(f"best config: {best_path}  (python tools/train.py -c {best_path})")
    else:
        print_fn("no trial completed yet: no best_config.yml")
    for w in warn:
        print_fn(f"warning: {w}")
    print_fn(f"trials: {csv_path}, {md_path}")
    return {"csv": csv_path, "md": md_path, "best_config": best_path if best is not None else None,
            "best": best, "warnings": warn, "total_steps": total_steps, "counts": counts}
