"""Helpers for the model tests: the tiny random-weight fixture model and its reference cases
(../shared/fixtures/mapanything_tiny beside the clone, produced with upstream MapAnything; see its
README). MAPANYTHING_ROS_FIXTURES points elsewhere; with MAPANYTHING_ROS_REQUIRE_FIXTURES=1 (CI)
missing fixtures fail the tests instead of skipping them."""

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

FIXTURES = Path(os.environ.get("MAPANYTHING_ROS_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
TINY = FIXTURES / "mapanything_tiny"
FULL_STATE_DICT = FIXTURES / "mapanything_full_state_dict.txt"
FULL_CONFIG = Path(__file__).resolve().parent / "data" / "map-anything-v1.1-config.json"
TOL = 1e-4

REQUIRED = os.environ.get("MAPANYTHING_ROS_REQUIRE_FIXTURES") == "1"
needs_fixtures = pytest.mark.skipif(not TINY.is_dir() and not REQUIRED, reason=f"model fixtures not found at {TINY}")


def tiny_config() -> dict:
    return json.loads((TINY / "config.json").read_text())


@functools.lru_cache(maxsize=1)
def _tiny_weights() -> dict:
    return safetensors.torch.load_file(str(TINY / "model.safetensors"))


def tiny_model(**kwargs):
    """A fresh tiny MapAnything in eval mode with the fixture weights loaded strictly."""
    from mapanything_ros.model.network import MapAnything

    model = MapAnything(tiny_config(), **kwargs)
    model.load_state_dict(_tiny_weights(), strict=True)
    return model.eval()


def case_names(kind: str) -> list[str]:
    prefix = {"forward": "c", "infer": "i"}[kind]
    return sorted(p.stem for p in (TINY / "cases").glob(f"{prefix}*.npz")) if TINY.is_dir() else []


@functools.lru_cache(maxsize=None)
def load_case(name: str) -> tuple[dict, np.lib.npyio.NpzFile]:
    data = np.load(TINY / "cases" / f"{name}.npz")
    return json.loads(str(data["__meta__"])), data


def case_views(name: str) -> list[dict]:
    """The stored inputs as passed upstream (tensors; data_norm_type as a list; a
    camera_poses (quats, trans) tuple rebuilt)."""
    meta, data = load_case(name)
    views = []
    for i in range(meta["num_views"]):
        view = {}
        for key in data.files:
            if not key.startswith(f"view{i}."):
                continue
            name_ = key.split(".", 1)[1]
            if name_ == "data_norm_type":
                view[name_] = [str(s) for s in data[key]]
            elif name_ == "camera_poses.quats":
                view["camera_poses"] = (torch.from_numpy(data[key]),
                                        torch.from_numpy(data[f"view{i}.camera_poses.trans"]))
            elif name_ != "camera_poses.trans":
                view[name_] = torch.from_numpy(data[key])
        views.append(view)
    return views


def reference_outputs(name: str) -> list[dict]:
    meta, data = load_case(name)
    return [{k.split(".", 1)[1]: data[k] for k in data.files if k.startswith(f"out{i}.")}
            for i in range(meta["num_views"])]


def norm_err(actual, ref) -> float:
    """max |a - r| / (|r| + rms(r)), the fixtures README's normalised error."""
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    assert a.shape == r.shape, (a.shape, r.shape)
    rms = np.sqrt(np.mean(r ** 2))
    return float(np.max(np.abs(a - r) / (np.abs(r) + rms + 1e-30)))


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check_outputs(outputs: list[dict], refs: list[dict]) -> float:
    """Every reference output matched within TOL (mask flips only where the logit is within TOL
    of 0); returns the largest normalised error."""
    worst = 0.0
    assert len(outputs) == len(refs)
    for i, (out, ref) in enumerate(zip(outputs, refs)):
        assert set(ref) <= set(out), f"view {i}: missing {set(ref) - set(out)}"
        for key, r in ref.items():
            a = to_numpy(out[key])
            assert a.shape == r.shape, (i, key)
            if r.dtype == bool:
                logits = ref.get("non_ambiguous_mask_logits")
                differ = a != r
                if key == "non_ambiguous_mask":
                    # a flip is allowed only where the reference logit is within tolerance of 0
                    assert np.all(np.abs(logits[differ]) < TOL), (i, key)
                else:
                    assert not differ.any(), (i, key, int(differ.sum()))
            else:
                err = norm_err(a, r)
                assert err < TOL, f"view {i} {key}: normalised error {err:.2e}"
                worst = max(worst, err)
    return worst
