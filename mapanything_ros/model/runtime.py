"""Where and in which precision the network runs: device choice, autocast, input transfer, diagnostics.

On CUDA the forward runs under ``torch.inference_mode()`` with bf16 autocast (fp16 on GPUs without bf16);
parameters stay float32, and the network itself keeps its float32-only parts outside autocast. On the CPU
it runs in plain float32.
"""

from __future__ import annotations

import contextlib

import torch


class DeviceError(RuntimeError):
    """A device asked for that this machine does not have (CUDA without a GPU or a CUDA torch)."""


def select_device(spec="auto") -> torch.device:
    """Resolve "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N" to an available device."""
    if isinstance(spec, str) and spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {spec!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {spec!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} requested but CUDA is not available (torch {torch.__version__})")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"device {spec!r} requested but only {count} CUDA device(s) exist")
    return device


def autocast_dtype(device: torch.device, amp: bool = True) -> torch.dtype | None:
    """Autocast dtype for ``device``: bf16 on CUDA (fp16 where the current GPU lacks bf16), None on CPU or
    with ``amp`` off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def to_device(value, device: torch.device):
    """Copy every tensor inside nested dicts/lists/tuples to ``device`` (non-blocking from pinned memory)."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=value.device.type == "cpu" and value.is_pinned())
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


class Runtime:
    """Runs a model on one device in the right inference context.

    ``Runtime(device="auto", amp=True)``; ``.device``, ``.autocast_dtype`` (None means float32),
    ``.context()``, ``.run(model, views)`` and ``.describe()``.
    """

    def __init__(self, device="auto", amp: bool = True):
        self.device = select_device(device)
        self.autocast_dtype = autocast_dtype(self.device, amp)

    def context(self):
        """Context manager: inference mode, plus autocast when :attr:`autocast_dtype` is set."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.autocast_dtype is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast_dtype))
        return stack

    def run(self, model: torch.nn.Module, views):
        """Move the views' tensors to the device and return ``model(views)`` computed in :meth:`context`."""
        views = to_device(views, self.device)
        with self.context():
            return model(views)

    def describe(self) -> dict:
        """Diagnostics: device, its name, compute dtype; CUDA memory in bytes, or CPU thread count."""
        info = {
            "device": str(self.device),
            "compute_dtype": str(self.autocast_dtype or torch.float32).removeprefix("torch."),
        }
        if self.device.type == "cuda":
            info["name"] = torch.cuda.get_device_name(self.device)
            info["memory_allocated"] = torch.cuda.memory_allocated(self.device)
            info["max_memory_allocated"] = torch.cuda.max_memory_allocated(self.device)
        else:
            info["name"] = "cpu"
            info["threads"] = torch.get_num_threads()
        return info
