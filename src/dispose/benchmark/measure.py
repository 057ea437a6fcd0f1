"""What every benchmark records: the machine and library versions, peak memory, and time spent inside modules.

* Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset before each measured run; what tensors
  hold, without the CUDA context and the allocator's cache); on Linux CPUs the process's peak resident set
  (``VmHWM``, reset through ``/proc/self/clear_refs``: weights, activations, Python and libraries together);
  elsewhere not measured (``None``, printed as n/a).
* Module times: forward pre/post hooks on each network; CUDA events on CUDA (no synchronisation inside the
  run), wall time elsewhere.  With ``--offload`` a module's time includes moving its weights to the device.
"""

from __future__ import annotations

import platform
import subprocess
import time
from contextlib import suppress
from importlib import metadata
from pathlib import Path

import torch


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    with suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return out.strip().splitlines()[0] if out.strip() else None
    return None


def environment(device: torch.device) -> dict:
    """Device name, driver and CUDA versions, library versions, threads (to compare runs)."""
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "accelerate": _version("accelerate"),
        "dispose": _version("dispose-animate"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            {
                "device_name": properties.name,
                "device_memory_bytes": properties.total_memory,
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "driver": _nvidia_driver(),
            }
        )
    else:
        info.update({"device_name": info["cpu"], "driver": None})
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of a run on ``device`` (module docstring): :meth:`reset` before, :meth:`peak` after."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = (
            "max_memory_allocated"
            if device.type == "cuda"
            else "peak RSS"
            if Path("/proc/self/clear_refs").exists()
            else None
        )

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind:
            with suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")

    def peak(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.kind:
            with suppress(OSError):
                for line in Path("/proc/self/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        return None


class ModuleTimes:
    """Seconds spent in the forward calls of named modules, and the number of calls (module docstring)."""

    def __init__(self, modules: dict[str, torch.nn.Module], device: torch.device) -> None:
        self.device = device
        self.handles = []
        self.spans: dict[str, list] = {name: [] for name in modules}
        for name, module in modules.items():
            self.handles.append(module.register_forward_pre_hook(self._start(name)))
            self.handles.append(module.register_forward_hook(self._stop(name)))

    def _mark(self):
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _start(self, name: str):
        def hook(_module, _args):
            self.spans[name].append([self._mark(), None])

        return hook

    def _stop(self, name: str):
        def hook(_module, _args, _output):
            self.spans[name][-1][1] = self._mark()

        return hook

    def reset(self) -> None:
        for spans in self.spans.values():
            spans.clear()

    def totals(self) -> dict[str, dict]:
        """``{name: {"calls": n, "seconds": s}}`` of the calls since the last :meth:`reset`."""
        synchronize(self.device)
        out = {}
        for name, spans in self.spans.items():
            done = [(a, b) for a, b in spans if b is not None]
            seconds = sum(a.elapsed_time(b) / 1000 if self.device.type == "cuda" else b - a for a, b in done)
            out[name] = {"calls": len(done), "seconds": seconds}
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
