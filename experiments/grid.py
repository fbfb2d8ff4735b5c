"""Grid specs: a YAML of base configs and axes, expanded into runs with stable ids.

A spec (read with omegaconf)::

    name: demo
    base:                       # LightningCLI config files (paths relative to the repo or the spec)
      model: configs/model/dit_demo.yaml
      data: configs/data/synthetic.yaml
      trainer: configs/trainer/cpu.yaml
      overrides: {steps: 200}   # any LightningCLI key (dotted) or alias below
    axes:                       # the cartesian product of these is the grid
      preset: [T0, T1, T2]
      seed: [0, 1]
    derived:                    # settings that follow an axis value
      batch_size: {by: preset, values: {T0: 32, T1: 32, T2: 16}}
    isoflop:                    # optional: steps set so that every run spends each budget C
      budgets: [1.0e12, 3.0e12]
      min_steps: 20             # a size needing fewer steps at a budget is left out there
      max_steps: 1000           # optional: so is one needing more (the size window moves with C)
      warmup_fraction: 0.1      # optional: warm-up steps = this fraction of each run's steps
    cooldown:                   # optional: WSD runs branched off one constant-rate trunk per size
      fraction: 0.2             # each run cools down over its last 20% of steps
      shape: 1-sqrt             # linear | 1-sqrt | cosine (see experiments.cooldown)
    hparams:                    # optional: every run at each learning rate x batch size, keeping its
      lr: [3.0e-3, 6.0e-3, 1.2e-2]   # data budget; adaptive adds points past an edge optimum
      batch_size: [8, 16]       # (see experiments.sweep)
      adaptive: {rounds: 1}

Aliases: ``preset``, ``steps``, ``lr``, ``warmup_steps``, ``seed``, ``num_clips`` (the data budget in
unique clips), ``batch_size``, ``precision``, ``devices`` and ``strategy`` (a trainer config name in
configs/trainer, e.g. ``ddp_cpu``). Every other key is a LightningCLI argument such as
``model.init_args.denoiser.init_args.attention``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ALIASES = {
    "preset": "model.init_args.denoiser.init_args.preset",
    "steps": "trainer.max_steps",
    "lr": "model.init_args.lr",
    "warmup_steps": "model.init_args.warmup_steps",
    "seed": "seed_everything",
    "num_clips": "data.init_args.num_clips",
    "batch_size": "data.init_args.batch_size",
    "precision": "trainer.precision",
    "devices": "trainer.devices",
}
SPEC_KEYS = {"name", "base", "axes", "derived", "isoflop", "cooldown", "hparams"}
BASE_KEYS = {"model", "data", "trainer", "overrides"}
REPO_ROOT = Path(__file__).resolve().parents[1]


class GridSpecError(ValueError):
    """A grid YAML that cannot be expanded; the message names the key and the fix."""


@dataclass(frozen=True)
class BranchPoint:
    """Where a cooldown branch starts: the checkpoint of run ``trunk_id`` at optimizer step ``step``."""

    trunk_id: str
    step: int


@dataclass
class Run:
    """One run of a grid: LightningCLI config files plus dotted overrides.

    A cooldown grid (:mod:`experiments.cooldown`) has two more kinds: a ``trunk`` (the constant-rate
    run that branches start from; not a point of the study) and branches (``start`` set: resumed
    from the trunk's checkpoint at ``start.step``).
    """

    name: str
    files: dict[str, str]
    overrides: dict[str, Any]
    axes: dict[str, Any] = field(default_factory=dict)
    start: BranchPoint | None = None
    trunk: bool = False

    @property
    def run_id(self) -> str:
        """Hash of the resolved config: file contents and overrides (stable across machines), and for
        a branch the trunk and step it starts from."""
        payload = {
            "files": {k: Path(v).read_text() for k, v in sorted(self.files.items())},
            "overrides": {k: self.overrides[k] for k in sorted(self.overrides)},
        }
        if self.start is not None:
            payload["start"] = [self.start.trunk_id, self.start.step]
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def cli_args(self) -> list[str]:
        """Arguments of ``lit-vdit fit`` for this run (without the run directory)."""
        args = [
            arg
            for key in ("model", "data", "trainer")
            if key in self.files
            for arg in (f"--{key}", self.files[key])
        ]
        for key, value in self.overrides.items():
            # YAML's lists, mappings and null as JSON (jsonargparse reads "null", not Python's "None")
            as_json = isinstance(value, list | dict) or value is None
            args += [f"--{key}", json.dumps(value) if as_json else str(value)]
        return args

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "files": self.files,
            "overrides": self.overrides,
            "axes": self.axes,
            "start": None if self.start is None else vars(self.start),
            "trunk": self.trunk,
        }


def resolve_key(key: str) -> str:
    return ALIASES.get(key, key)


def _find_file(path: str, spec_dir: Path, kind: str) -> str:
    for candidate in (
        Path(path),
        spec_dir / path,
        REPO_ROOT / path,
        REPO_ROOT / "configs" / kind / f"{path}.yaml",
    ):
        if candidate.is_file():
            return str(candidate.resolve())
    raise GridSpecError(
        f"base.{kind}: config file {path!r} not found (relative to the spec, the repo or configs/{kind}/)"
    )


def load_spec(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GridSpecError(f"grid spec {path} not found (see experiments/*.yaml)")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise GridSpecError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}"
        )
    unknown = set(spec.get("base", {})) - BASE_KEYS
    if unknown:
        raise GridSpecError(
            f"{path}: unknown key(s) under base: {sorted(unknown)}; allowed: {sorted(BASE_KEYS)}"
        )
    if not spec.get("axes") and not spec.get("isoflop"):
        raise GridSpecError(f"{path}: a grid needs 'axes' (lists of values to sweep) or 'isoflop'")
    for key, values in (spec.get("axes") or {}).items():
        if not isinstance(values, list) or not values:
            raise GridSpecError(f"{path}: axis {key!r} must be a non-empty list of values, got {values!r}")
    spec["_dir"] = str(path.resolve().parent)
    return spec


def _derive(spec: dict[str, Any], axes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, rule in (spec.get("derived") or {}).items():
        if not isinstance(rule, dict) or "by" not in rule or "values" not in rule:
            raise GridSpecError(f"derived.{key} must be {{by: AXIS, values: {{AXIS_VALUE: SETTING}}}}")
        value = axes.get(rule["by"])
        if value not in rule["values"] and str(value) not in rule["values"]:
            raise GridSpecError(f"derived.{key}: no value given for {rule['by']}={value!r}")
        out[resolve_key(key)] = rule["values"].get(value, rule["values"].get(str(value)))
    return out


def run_name(axes: dict[str, Any]) -> str:
    return "-".join(f"{key.split('.')[-1]}={value}" for key, value in axes.items()) or "run"


def expand(spec: dict[str, Any]) -> list[Run]:
    """All runs of the grid (IsoFLOP step counts are filled in by :func:`apply_isoflop`)."""
    base = spec.get("base", {})
    spec_dir = Path(spec["_dir"])
    files = {
        kind: _find_file(base[kind], spec_dir, kind) for kind in ("model", "data", "trainer") if kind in base
    }
    base_overrides = {resolve_key(k): v for k, v in (base.get("overrides") or {}).items()}
    axes = spec.get("axes") or {}
    runs = []
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values, strict=True))
        overrides = dict(base_overrides)
        run_files = dict(files)
        for key, value in point.items():
            if key == "strategy":
                run_files["trainer"] = _find_file(str(value), spec_dir, "trainer")
            else:
                overrides[resolve_key(key)] = value
        overrides.update(_derive(spec, point))
        runs.append(Run(run_name(point), run_files, overrides, point))
    return runs
