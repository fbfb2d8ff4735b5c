"""WSD schedules and cooldown grids: branches resumed from one trunk per size train as the same WSD
runs from step 0, cost the shared prefix once, and resume after kills without redoing finished work."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_grid import write_spec

from experiments.collect import collect
from experiments.cooldown import study_flops
from experiments.grid import GridSpecError, load_spec
from experiments.plan import plan
from experiments.runner import run_dir, run_local, run_state
from lit_vdit.modules.lr_schedules import lr_factor, wsd_decay_start

REPO = Path(__file__).resolve().parents[1]
STEPS = [8, 16]  # cooldowns start at steps 4 and 8 (fraction 0.5): the trunk trains 8 steps
COOLDOWN = {"fraction": 0.5, "shape": "linear"}
WSD = {
    "model.init_args.lr_schedule": "wsd",
    "model.init_args.decay_fraction": 0.5,
    "model.init_args.decay_shape": "linear",
}


def grid_spec(tmp_path, repo_root, cooldown: bool, **overrides):
    path = write_spec(
        tmp_path,
        repo_root,
        {"preset": ["T0"], "steps": STEPS},
        **({"cooldown": COOLDOWN} if cooldown else {}),
    )
    spec = yaml.safe_load(path.read_text())
    spec["base"]["overrides"].update({"warmup_steps": 2, **({} if cooldown else WSD), **overrides})
    path.write_text(yaml.safe_dump(spec))
    return path


def run_grid(path, out):
    planned = plan(load_spec(path))
    states = run_local([run for run, _ in planned], out)
    return planned, states


def finals(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values("step").groupby("name").tail(1).set_index("name").sort_index()


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cooldown")
    (tmp / "branched").mkdir()
    (tmp / "independent").mkdir()
    planned, states = run_grid(grid_spec(tmp / "branched", str(REPO), True), tmp / "branched" / "out")
    assert set(states.values()) == {"done"}
    _, states = run_grid(grid_spec(tmp / "independent", str(REPO), False), tmp / "independent" / "out")
    assert set(states.values()) == {"done"}
    return planned, collect(tmp / "branched" / "out"), collect(tmp / "independent" / "out")


def test_wsd_schedule_holds_then_cools_down_to_the_floor():
    factors = [lr_factor(s, "wsd", 2, 10, 0.0, decay_fraction=0.3, decay_shape="linear") for s in range(10)]
    assert wsd_decay_start(10, 0.3) == 7
    assert factors == pytest.approx([0.5, 1, 1, 1, 1, 1, 1, 2 / 3, 1 / 3, 0])
    sqrt = [lr_factor(s, "wsd", 0, 10, 0.1, decay_fraction=0.4, decay_shape="1-sqrt") for s in (5, 6, 9)]
    assert sqrt == pytest.approx([1, 0.1 + 0.9 * (1 - math.sqrt(0.25)), 0.1])


def test_plan_has_one_trunk_per_size_and_a_branch_per_budget(grids):
    planned, _, _ = grids
    trunk, *branches = [run for run, _ in planned]
    assert trunk.trunk and trunk.overrides["trainer.max_steps"] == 8
    assert trunk.overrides["model.init_args.lr_schedule"] == "constant"
    assert [(b.start.trunk_id, b.start.step, b.overrides["trainer.max_steps"]) for b in branches] == [
        (trunk.run_id, 4, 8),
        (trunk.run_id, 8, 16),
    ]


def test_branches_train_as_the_same_wsd_runs_from_step_0(grids):
    _, branched, independent = grids
    got, expected = finals(branched), finals(independent)
    assert list(got.index) == list(expected.index)  # the trunk is not a row of runs.csv
    for column in ("val_loss_raw", "val_loss_ema", "lr", "samples_seen", "flops_measured"):
        assert got[column].tolist() == pytest.approx(expected[column].tolist(), rel=1e-6, abs=0), column
    assert got["branch_step"].tolist() == [8, 4] and expected.get("branch_step") is None  # steps=16, steps=8
    per_step = got["flops_measured"].iloc[0] / 16
    assert got["flops_shared"].tolist() == pytest.approx([8 * per_step, 4 * per_step])
    cost = study_flops(branched)
    # every point alone: 16 + 8 steps; branched: the trunk's 8 steps once, then 8 + 4 cooldown steps
    assert cost["points"] == pytest.approx(24 * per_step) and cost["trained"] == pytest.approx(20 * per_step)
    assert study_flops(independent)["trained"] == study_flops(independent)["points"]


def test_killed_trunk_and_branch_resume_without_redoing_finished_runs(grids, tmp_path, repo_root):
    _, branched, _ = grids
    trunk_kill, branch_kill = tmp_path / "kill-trunk", tmp_path / "kill-branch"
    trunk_kill.touch()
    branch_kill.touch()
    callbacks = [
        {"class_path": "kill_switch.KillAt", "init_args": {"step": 6, "marker": str(trunk_kill)}},
        {"class_path": "kill_switch.KillAt", "init_args": {"step": 12, "marker": str(branch_kill)}},
    ]
    path = grid_spec(tmp_path, repo_root, True)
    spec = yaml.safe_load(path.read_text())
    spec["base"]["overrides"]["trainer.callbacks+"] = callbacks
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    planned, states = run_grid(path, out)
    trunk, short, long = [run for run, _ in planned]
    # The trunk is killed at step 6, after saving step 4: the short branch runs, the long one cannot.
    assert [states[r.run_id] for r in (trunk, short, long)] == ["failed", "done", "failed"]
    assert "has not saved step 8" in json.loads((run_dir(out, long) / "status.json").read_text())["error"]
    # Rerun: the trunk resumes to step 8, the short branch is not run again; the long one is killed at 12.
    _, states = run_grid(path, out)
    assert states == {trunk.run_id: "done", long.run_id: "failed"}
    _, states = run_grid(path, out)  # the long branch resumes from its own checkpoint of step 12
    assert states == {long.run_id: "done"}
    assert [run_state(run_dir(out, r)) for r in (trunk, short, long)] == ["done"] * 3
    starts = {r.name: (run_dir(out, r) / "log.txt").read_text().count("=== ") for r in (trunk, short, long)}
    assert starts == {trunk.name: 2, short.name: 1, long.name: 2}  # the blocked long branch never started
    got, expected = finals(collect(out)), finals(branched)
    for column in ("val_loss_raw", "val_loss_ema", "flops_measured"):
        assert got[column].tolist() == pytest.approx(expected[column].tolist(), rel=1e-6, abs=0), column


def test_cooldown_specs_name_the_problem(tmp_path, repo_root):
    path = grid_spec(tmp_path, repo_root, True, warmup_steps=6)
    with pytest.raises(GridSpecError, match="warms up for 6 steps, past its cooldown start at step 4"):
        plan(load_spec(path))
    spec = yaml.safe_load(path.read_text())
    spec["cooldown"] = {"fraction": 1.5}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(GridSpecError, match=r"cooldown.fraction must be in \(0, 1\)"):
        plan(load_spec(path))


class FakeSlurm:
    """Records what run_slurm asks of a SLURM executor (no cluster needed)."""

    cluster = "slurm"

    def __init__(self):
        self.parameters, self.submitted = {}, []

    def update_parameters(self, **parameters):
        self.parameters.update(parameters)

    def submit(self, fn, run, directory):
        job = type("Job", (), {"job_id": f"{100 + len(self.submitted)}"})()
        self.submitted.append((run, dict(self.parameters.get("slurm_additional_parameters", {})), job))
        return job


def test_on_slurm_branches_wait_for_their_trunks_job(tmp_path, repo_root):
    from experiments.runner import run_slurm

    planned = plan(load_spec(grid_spec(tmp_path, repo_root, True)))
    executor = FakeSlurm()
    run_slurm(planned, tmp_path / "grid", executor)
    (trunk, none, trunk_job), *branches = executor.submitted
    assert trunk.trunk and none == {}
    assert [extra for _, extra, _ in branches] == [{"dependency": f"afterok:{trunk_job.job_id}"}] * 2
