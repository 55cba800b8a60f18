"""``gcd train`` under torchrun: two CPU ranks over gloo train one model, rank 0 writes the files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gcd_core.model import read_checkpoint

pytestmark = [
    pytest.mark.ddp,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed"),
]

ARGS = [
    "--crystal", "bcc", "--supercell", "2", "--voxel-size", "0.79125", "--base-channels", "8",
    "--steps", "6", "--batch-size", "2", "--log-every", "2", "--device", "cpu",
]  # fmt: skip


def _run(command: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    # one OpenMP thread per rank: two ranks on a 2-core machine must not fight over the cores
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # a launcher around pytest must not leak into the children
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _check_run(out: Path, world_size: int) -> dict:
    checkpoint = read_checkpoint(out / "checkpoint.pt")
    assert checkpoint["step"] == 6
    assert [entry["step"] for entry in checkpoint["loss_log"]] == [2, 4, 6]
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in checkpoint["loss_log"])
    for state in (checkpoint["model"], checkpoint["ema"]):
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    meta = json.loads((out / "model.json").read_text())
    assert meta["world_size"] == world_size and meta["steps"] == 6
    assert (out / "model.pt").is_file()
    return checkpoint


def test_torchrun_two_ranks_match_one_process(tmp_path: Path) -> None:
    two, one = tmp_path / "two", tmp_path / "one"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = _run([*launcher, "-m", "gcd_core.cli", "train", str(two), *ARGS])
    assert done.stdout.count("trained to step 6") == 1  # only rank 0 reports
    _run([sys.executable, "-m", "gcd_core.cli", "train", str(one), *ARGS])
    ddp, single = _check_run(two, 2), _check_run(one, 1)

    # Both start from the same seeded weights and rank 0 draws the same batches as the single process, so
    # the DDP weights differ from the single-process ones only because rank 1's gradients were averaged in.
    assert single["config"] == ddp["config"]
    moved = [not torch.equal(ddp["model"][k], single["model"][k]) for k in ddp["model"]]
    assert any(moved)

    # The DDP checkpoint is an ordinary one: a single process resumes it and extends the loss log.
    more = [*ARGS[: ARGS.index("--steps")], "--steps", "8", *ARGS[ARGS.index("--batch-size") :]]
    _run([sys.executable, "-m", "gcd_core.cli", "train", str(two), *more])
    resumed = read_checkpoint(two / "checkpoint.pt")
    assert resumed["step"] == 8 and resumed["loss_log"][:3] == ddp["loss_log"]
