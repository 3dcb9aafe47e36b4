"""State-dict layout: exactly the released checkpoint's keys and shapes (built on meta)."""

import json
import re

import pytest
import safetensors
import safetensors.torch
import torch

from model_fixtures import FULL_CONFIG, FULL_STATE_DICT, TINY, needs_fixtures, tiny_config

from mapanything_ros.model.network import MapAnything
from mapanything_ros.model.transformer import sinusoid_table

RELEASE_PARAMETERS = 1_228_491_222


def release_layout() -> dict[str, tuple[int, ...]]:
    """Section [1] of the full-size key/shape list: file key -> shape."""
    layout = {}
    for line in FULL_STATE_DICT.read_text().splitlines():
        if line.startswith("# [2]"):
            break
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype, _kind = line.split("\t")
        layout[key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return layout


@pytest.fixture(scope="module")
def full_model():
    with torch.device("meta"):
        return MapAnything(json.loads(FULL_CONFIG.read_text()))


@needs_fixtures
def test_full_size_keys_and_shapes_match_release(full_model):
    expected = release_layout()
    actual = {k: tuple(v.shape) for k, v in full_model.state_dict().items()}
    assert len(expected) == 736
    assert sorted(set(expected) - set(actual)) == []
    assert sorted(set(actual) - set(expected)) == []
    assert {k: v for k, v in actual.items() if expected[k] != v} == {}


def test_full_size_parameter_count(full_model):
    assert sum(p.numel() for p in full_model.parameters()) == RELEASE_PARAMETERS


@needs_fixtures
def test_tiny_file_keys_and_shapes_match_model():
    model = MapAnything(tiny_config())
    with safetensors.safe_open(str(TINY / "model.safetensors"), "pt") as f:
        file_shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert file_shapes == {k: tuple(v.shape) for k, v in model.state_dict().items()}


@needs_fixtures
def test_meta_build_loads_with_assign_and_reset_buffers():
    with torch.device("meta"):
        model = MapAnything(tiny_config())
    state = safetensors.torch.load_file(str(TINY / "model.safetensors"))
    state.pop("info_sharing.view_pos_table")
    model.load_state_dict(state, strict=False, assign=True)
    model.reset_buffers()
    table = model.info_sharing.view_pos_table
    assert table.device.type == "cpu"
    assert torch.equal(table, sinusoid_table(1, 64))
    assert torch.equal(table[0, 0::2], torch.zeros(32)) and torch.equal(table[0, 1::2], torch.ones(32))
