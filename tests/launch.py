"""Several CPU processes for the tests of multi-process paths: torchrun (gloo) on a free loopback port.

``accelerate launch --cpu --num_processes N`` starts one process on a machine without GPUs, so the tests use
torchrun and assert the world size the processes report."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(processes: int, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node PROCESSES ARGS`` (ARGS: a script and its arguments,
    or ``-m module ...``), one torch thread per process, this test run's import path."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                           "--master_port", str(free_port()), *args],
                          check=False, env=env, capture_output=True, text=True, timeout=timeout)
