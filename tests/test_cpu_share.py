"""On a CPU mathtune waits passively for its OpenMP threads (core.cpu_share), set before torch
loads; a user's own OMP_WAIT_POLICY or OMP_NUM_THREADS wins."""

import os
import subprocess
import sys

SHOW = ("import os, sys\nfrom mathtune.cli import main\nmain(sys.argv[1:])\nimport torch\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())")


def _run(env_extra: dict, code: str = SHOW) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")} | env_extra
    proc = subprocess.run([sys.executable, "-c", code, "report", "/nonexistent-run"], env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.stdout.split()


def test_a_command_waits_passively_and_keeps_the_users_settings():
    import torch

    default_threads = str(torch.get_num_threads()) if "OMP_NUM_THREADS" not in os.environ else None
    policy, threads = _run({})
    assert policy == "PASSIVE"
    if default_threads is not None:
        assert threads == default_threads  # the thread count is the runtime's: mathtune never sets it
    assert _run({"OMP_WAIT_POLICY": "ACTIVE"})[0] == "ACTIVE"
    assert _run({"OMP_NUM_THREADS": "1"}) == ["PASSIVE", "1"]


def test_torch_loaded_first_is_left_as_it_is():
    code = "import torch\n" + SHOW
    assert _run({}, code)[0] == "None"
