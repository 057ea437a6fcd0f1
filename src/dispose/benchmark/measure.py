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
    """Seconds spent in the forward calls of named modules, in call order (module docstring)."""

    def __init__(self, modules: dict[str, torch.nn.Module], device: torch.device) -> None:
        self.device = device
        self.handles = []
        self.names = list(modules)
        self.spans: list[list] = []  # [name, start mark, end mark] per call, in call order
        self.open: dict[str, list] = {}
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
            self.open[name] = [name, self._mark(), None]
            self.spans.append(self.open[name])

        return hook

    def _stop(self, name: str):
        def hook(_module, _args, _output):
            self.open.pop(name)[2] = self._mark()

        return hook

    def reset(self) -> None:
        self.spans.clear()
        self.open.clear()

    def calls(self) -> list[tuple[str, float]]:
        """``(name, seconds)`` of every finished call since the last :meth:`reset`, in call order."""
        synchronize(self.device)
        cuda = self.device.type == "cuda"
        return [(name, a.elapsed_time(b) / 1000 if cuda else b - a) for name, a, b in self.spans
                if b is not None]

    def totals(self, calls: list[tuple[str, float]] | None = None) -> dict[str, dict]:
        """``{name: {"calls": n, "seconds": s}}`` of ``calls`` (default: the calls since :meth:`reset`)."""
        calls = self.calls() if calls is None else calls
        return {name: {"calls": sum(1 for n, _ in calls if n == name),
                       "seconds": sum(t for n, t in calls if n == name)} for name in self.names}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
