"""torch.profiler over a window of training steps, and on a GPU what makes a step host-bound.

    window = StepProfile()
    window.start()          # at the first profiled step's start
    ...                     # the steps
    report = window.stop(3) # at the last one's end: 3 steps

The report: the top operations by self CPU time and (GPU) by self device time, each with its
total over the window, its share per step and its call count; on a GPU also the synchronising
CUDA runtime calls per step (cudaStreamSynchronize and kin, counted by the profiler), the
implicit synchronisations per step that torch's sync debug mode reports and the Python lines
that caused them, kernel launches per step, how much of the window the device was busy, and the
caching allocator's retries (torch.cuda.memory_stats()["num_alloc_retries"]: each one is a
cudaFree of every cached block and a new cudaMalloc, a stall of milliseconds).
"""

from __future__ import annotations

import time
import warnings
from collections import Counter

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")


class StepProfile:
    def start(self) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile

        self.cuda = torch.cuda.is_available()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.prof = profile(activities=activities)
        self.prof.__enter__()
        if self.cuda:
            self._catch = warnings.catch_warnings(record=True)
            self.caught = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        self.started = time.perf_counter()

    def stop(self, steps: int, rows: int = 15) -> dict:
        import torch

        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
            self._catch.__exit__(None, None, None)
            torch.cuda.synchronize()
        wall = time.perf_counter() - self.started
        self.prof.__exit__(None, None, None)
        events = self.prof.key_averages()
        report = {"steps": steps, "wall_s": wall, "by_cpu": top(events, "self_cpu_time_total", rows, steps)}
        if self.cuda:
            report["by_device"] = top(events, "self_device_time_total", rows, steps)
            busy = sum(e.self_device_time_total for e in events if e.self_device_time_total > 0) / 1e6
            report["device_busy_share"] = busy / wall
            report["sync_calls_per_step"] = sum(e.count for e in events if e.key in SYNC_CALLS) / steps
            report["launches_per_step"] = sum(e.count for e in events if e.key in LAUNCH_CALLS) / steps
            syncs = [w for w in self.caught if "synchroniz" in str(w.message)]
            report["implicit_syncs_per_step"] = len(syncs) / steps
            report["sync_sources"] = Counter(f"{w.filename}:{w.lineno}" for w in syncs).most_common(8)
            stats = torch.cuda.memory_stats()
            report["alloc_retries"] = stats.get("num_alloc_retries", 0)
            report["ooms"] = stats.get("num_ooms", 0)
        return report


def top(events, key: str, rows: int, steps: int) -> list[dict]:
    """The `rows` events with the largest `key` (microseconds), in milliseconds per step."""
    ranked = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:rows]
    return [{"name": e.key, "ms_per_step": getattr(e, key) / 1e3 / steps, "calls_per_step": e.count / steps,
             "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
             "self_device_ms_per_step": getattr(e, "self_device_time_total", 0) / 1e3 / steps}
            for e in ranked if getattr(e, key) > 0]


def format_report(report: dict) -> str:
    lines = [f"profile over {report['steps']} step(s), {report['wall_s']:.2f} s with the profiler on"]
    for title, key in (("self device time", "by_device"), ("self CPU time", "by_cpu")):
        if key not in report:
            continue
        lines.append(f"  top operations by {title} (ms per step; calls per step):")
        for row in report[key]:
            lines.append(f"    {row['ms_per_step']:10.2f}  {row['calls_per_step']:8.1f}  {row['name'][:90]}")
    if "sync_calls_per_step" in report:
        lines.append(f"  device busy {report['device_busy_share']:.0%} of the window; per step: "
                     f"{report['sync_calls_per_step']:.1f} synchronising CUDA calls, "
                     f"{report['implicit_syncs_per_step']:.1f} implicit syncs (sync debug mode), "
                     f"{report['launches_per_step']:.0f} kernel launches; allocator retries so far "
                     f"{report['alloc_retries']}, OOMs {report['ooms']}")
        for source, n in report["sync_sources"]:
            lines.append(f"    {n / report['steps']:6.1f} syncs/step from {source}")
    return "\n".join(lines)
