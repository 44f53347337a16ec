"""Data-parallel training: one run over several processes with torchrun.

``sftlab train STUDY --run ID --nproc 2`` starts
``torchrun --nproc-per-node 2 -m sftlab.train.launch STUDY ID``; each process runs
:func:`~sftlab.train.train_run` and transformers / accelerate set up DDP (gloo on
CPU, NCCL on GPU) from torchrun's environment. The effective batch is split over
the processes, so the result equals one process up to float noise.

FSDP / DeepSpeed: set ``training.fsdp`` (e.g. ``"full_shard auto_wrap"``) or
``training.deepspeed`` (a JSON config path) in the study; they are passed to
transformers' ``TrainingArguments`` unchanged, and launched the same way (or with
``accelerate launch -m sftlab.train.launch STUDY ID`` on a cluster).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The command line that runs ``sftlab.train.launch args`` on ``nproc`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "sftlab.train.launch", *args]


def run_distributed(nproc: int, args: list[str], *, threads_per_process: int = 1) -> int:
    """Run the launcher with ``nproc`` processes; returns torchrun's exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                           str(threads_per_process))}
    return subprocess.run(torchrun_command(nproc, args), env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Entry point of each process: ``STUDY RUN_ID`` or ``--rows SPEC.json`` (tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--rows":
        return _train_from_spec(Path(argv[1]))
    from sftlab.study import load_study, plan
    from sftlab.train import train_run

    study = load_study(argv[0])
    run = plan(study).run(argv[1])
    train_run(study, run, progress=os.environ.get("RANK", "0") == "0")
    return 0


def _train_from_spec(path: Path) -> int:
    """Train from a JSON spec {model, rows, config, out} (no study file needed)."""
    import json

    from sftlab.train import TrainConfig, train_on_rows

    spec = json.loads(path.read_text())
    train_on_rows(spec["model"], spec["rows"], TrainConfig.of(**spec["config"]), spec["out"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
