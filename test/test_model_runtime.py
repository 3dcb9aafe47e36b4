"""Device selection, autocast choice and the inference context (CUDA paths via monkeypatched queries)."""

import pytest
import torch

from mapanything_ros.model import Runtime, autocast_dtype, select_device, to_device


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend two CUDA devices exist; returns a setter for bf16 support."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)

    def set_bf16(supported):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)

    set_bf16(True)
    return set_bf16


def test_auto_picks_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        select_device("cuda")


def test_auto_picks_cuda_when_available(fake_cuda):
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda:1") == torch.device("cuda:1")
    assert select_device(torch.device("cuda", 0)) == torch.device("cuda:0")
    with pytest.raises(RuntimeError, match="only 2 CUDA"):
        select_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "mps", "tpu:0", "cuda:x"])
def test_unknown_devices_are_rejected(spec):
    with pytest.raises(ValueError, match=repr(spec).replace("'", ".")):
        select_device(spec)


def test_autocast_dtype_per_device(fake_cuda):
    cuda = torch.device("cuda")
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(cuda) is torch.bfloat16
    assert autocast_dtype(cuda, amp=False) is None
    fake_cuda(False)
    assert autocast_dtype(cuda) is torch.float16
    runtime = Runtime("cuda:1")
    assert runtime.device == torch.device("cuda:1") and runtime.autocast_dtype is torch.float16


def test_cpu_runtime_runs_in_float32_inference_mode():
    runtime = Runtime("cpu")
    assert runtime.device == torch.device("cpu") and runtime.autocast_dtype is None
    seen = {}

    def model(views):
        seen["inference"] = torch.is_inference_mode_enabled()
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return [{"y": v["x"] @ v["x"].T} for v in views]

    views = [{"x": torch.randn(3, 4), "data_norm_type": ["dinov2"], "pair": (torch.zeros(1), 2)}]
    (out,) = runtime.run(model, views)
    assert seen == {"inference": True, "autocast": False}
    assert out["y"].dtype == torch.float32 and out["y"].is_inference()
    moved = to_device(views, runtime.device)
    assert moved[0]["data_norm_type"] == ["dinov2"] and isinstance(moved[0]["pair"], tuple)
    assert moved[0]["pair"][1] == 2


def test_describe_reports_cpu_threads():
    info = Runtime("cpu").describe()
    assert info["device"] == "cpu" and info["compute_dtype"] == "float32"
    assert info["threads"] == torch.get_num_threads()
