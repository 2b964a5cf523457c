"""How mathtune's OpenMP threads wait, so that a busy CPU slows it in proportion.

    share_cpu()   # at the start of a command, before torch is imported

By default the OpenMP runtime torch is built with (GNU libgomp here: `torch.__config__.
parallel_info()`) keeps each thread spinning for a while at every barrier, waiting for its
peers. On a machine whose cores are busy with another process, a peer is often descheduled, and
the spinning threads burn the time slices it needed: on a 2-core CPU with one other CPU-bound
process, `mathtune eval --limit 4 --max-new-tokens 256` on the 0.5B took 6 min 55 s against
29 s with one thread (byte-identical records). A passive wait (OMP_WAIT_POLICY=PASSIVE: a
waiting thread sleeps at once) gives the core back instead; on a quiet machine it costs little,
since the threads then reach their barriers together (BENCHMARKS.md, "A CPU that shares well").

The runtime reads the variable once, when torch loads it, so this must run before torch is
imported; in a process that already imported torch it changes nothing, and says so. A user's
own OMP_WAIT_POLICY, OMP_NUM_THREADS or torch.set_num_threads always wins: the thread count is
never changed, and a wait policy already in the environment is kept.
"""

from __future__ import annotations

import os
import sys


def share_cpu() -> str:
    """Set a passive OpenMP wait unless the user chose one; returns what was done, in words."""
    if "OMP_WAIT_POLICY" in os.environ:
        return f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} (the user's)"
    if "torch" in sys.modules:
        return "torch already loaded: its OpenMP wait policy is the runtime's default"
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "OMP_WAIT_POLICY=PASSIVE"
