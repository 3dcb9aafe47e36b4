"""Checkpoint config parsing, offline weight resolution and strict loading, against the tiny fixture."""

import json
import math
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mapanything_ros.model import (
    CheckpointError,
    CheckpointNotFoundError,
    Runtime,
    StateDictMismatchError,
    canonical_key,
    load_model,
    read_config,
    resolve_checkpoint,
)
from model_fixtures import FIXTURES, TINY, needs_fixtures

COMMIT = "0123456789abcdef0123456789abcdef01234567"

pytestmark = needs_fixtures


def make_hub_cache(cache, repo_id, commit=COMMIT, ref="main", src=TINY):
    """Lay out a Hugging Face hub cache entry like huggingface_hub does: blobs + snapshot symlinks + ref."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        blob = repo / "blobs" / f"{name.replace('.', '')}-{commit[:8]}"
        blob.symlink_to(src / name)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a host name fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    yield attempts
    assert attempts == []


@pytest.fixture(scope="module")
def tiny_model():
    return load_model(TINY)


def tiny_copy(tmp_path, state=None, metadata=None):
    """A checkpoint directory with the fixture config and ``state`` (default: the fixture weights)."""
    shutil.copyfile(TINY / "config.json", tmp_path / "config.json")
    if state is None:
        shutil.copyfile(TINY / "model.safetensors", tmp_path / "model.safetensors")
    else:
        save_file(state, tmp_path / "model.safetensors", metadata=metadata)
    return tmp_path


def fixture_state():
    with safe_open(TINY / "model.safetensors", framework="pt") as f:
        return {k: f.get_tensor(k).clone() for k in f.keys()}, f.metadata()


# --- config ---------------------------------------------------------------------------------------------


def test_config_with_infinity_parses():
    config = read_config(TINY / "config.json")
    head = json.dumps(config["pred_head_config"])  # json writes inf back as Infinity
    assert "Infinity" in head and "-Infinity" in head
    values = []

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, float):
            values.append(node)

    walk(config)
    assert any(math.isinf(v) and v > 0 for v in values) and any(math.isinf(v) and v < 0 for v in values)


def test_config_that_is_not_mapanything_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "bert", "encoder_config": {}}))
    with pytest.raises(CheckpointError, match="not a MapAnything config") as err:
        read_config(path)
    assert str(path) in str(err.value) and "info_sharing_config" in str(err.value)


def test_config_of_unsupported_architecture_is_named(tmp_path):
    tiny_copy(tmp_path)
    config = read_config(tmp_path / "config.json")
    config["encoder_config"]["encoder_str"] = "radio"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="cannot build MapAnything") as err:
        load_model(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value) and "radio" in str(err.value)


@pytest.mark.parametrize("path, value, said", [
    (("encoder_config", "vit_arch_override", "patch_size"), 0, "sizes must be positive: patch_size 0"),
    (("encoder_config", "vit_arch_override", "interpolate_offset"), math.nan, "interpolate_offset must be finite"),
    (("info_sharing_config", "module_args", "indices"), [1, 7], "indices [1, 7] must be layers of its 4"),
    (("pred_head_config", "dpt_adaptor", "depth_mode"), "bogus", "unknown depth_mode 'bogus'"),
    (("pred_head_config", "dpt_adaptor", "depth_vmin"), math.inf, "depth vmin inf and vmax inf bound no value"),
    (("pred_head_config", "scale_adaptor", "vmin"), math.nan, "scale vmin nan"),
])
def test_config_values_no_network_runs_with_are_named(tmp_path, path, value, said):
    """A value that builds no network or fails every inference (a zero patch size was a bare
    ZeroDivisionError; layer indices out of range, a NaN or an unknown mode loaded, then every
    window failed): refused at load, naming config.json and the value."""
    tiny_copy(tmp_path)
    config = read_config(tmp_path / "config.json")
    node = config
    for key in path[:-1]:
        node = node[key]
    assert path[-1] in node
    node[path[-1]] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="cannot build MapAnything") as err:
        load_model(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value) and said in str(err.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\udcff"])
def test_config_unparsable_is_named(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(CheckpointError) as err:
        read_config(path)
    assert str(path) in str(err.value)


# --- resolution -----------------------------------------------------------------------------------------


def test_local_directory_and_file(no_network):
    assert resolve_checkpoint(TINY) == (TINY / "config.json", TINY / "model.safetensors")
    assert resolve_checkpoint(str(TINY / "model.safetensors")) == (TINY / "config.json", TINY / "model.safetensors")


def test_local_directory_without_weights_is_named(tmp_path, no_network):
    shutil.copyfile(TINY / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="lacks model.safetensors") as err:
        resolve_checkpoint(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(CheckpointError, match="expected a checkpoint directory"):
        resolve_checkpoint(tmp_path / "config.json")


def test_hub_cache_from_argument_and_environment(tmp_path, monkeypatch, no_network):
    snapshot = make_hub_cache(tmp_path / "hub", "facebook/map-anything")
    expected = (snapshot / "config.json", snapshot / "model.safetensors")
    assert resolve_checkpoint("facebook/map-anything", cache_dir=tmp_path / "hub") == expected
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert resolve_checkpoint("facebook/map-anything") == expected
    other = make_hub_cache(tmp_path / "other", "facebook/map-anything-apache")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "other"))  # wins over HF_HOME
    assert resolve_checkpoint("facebook/map-anything-apache")[1] == other / "model.safetensors"


def test_hub_cache_revisions(tmp_path, no_network):
    cache = tmp_path / "hub"
    snapshot = make_hub_cache(cache, "someone/tiny", ref=None)  # filled with an explicit commit: no refs/main
    assert resolve_checkpoint("someone/tiny", cache_dir=cache)[1] == snapshot / "model.safetensors"
    second = make_hub_cache(cache, "someone/tiny", commit="f" * 40, ref="v1")
    assert resolve_checkpoint("someone/tiny", cache_dir=cache, revision="v1")[1] == second / "model.safetensors"
    assert resolve_checkpoint("someone/tiny", cache_dir=cache, revision=COMMIT)[1] == snapshot / "model.safetensors"
    with pytest.raises(CheckpointNotFoundError, match="2 snapshots"):
        resolve_checkpoint("someone/tiny", cache_dir=cache)


def test_local_directory_comes_before_hub_cache(tmp_path, monkeypatch, no_network):
    make_hub_cache(tmp_path / "hub", "facebook/map-anything")
    local = tmp_path / "work" / "facebook" / "map-anything"
    local.mkdir(parents=True)
    tiny_copy(local)
    monkeypatch.chdir(tmp_path / "work")
    config, weights = resolve_checkpoint("facebook/map-anything", cache_dir=tmp_path / "hub")
    assert weights.resolve() == (local / "model.safetensors").resolve()


def test_not_found_lists_every_place(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError) as err:
        resolve_checkpoint("facebook/map-anything")
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "facebook" / "map-anything") in message
    assert str(tmp_path / "hub" / "models--facebook--map-anything") in message
    assert "huggingface-cli download facebook/map-anything" in message

    make_hub_cache(tmp_path / "hub", "facebook/map-anything")
    os.remove(tmp_path / "hub/models--facebook--map-anything/snapshots" / COMMIT / "model.safetensors")
    with pytest.raises(CheckpointNotFoundError, match="model.safetensors not cached"):
        resolve_checkpoint("facebook/map-anything")
    with pytest.raises(CheckpointNotFoundError, match="not a Hugging Face repo id"):
        resolve_checkpoint(tmp_path / "missing" / "dir")


def test_hub_cache_load_never_touches_network(tmp_path, monkeypatch, no_network):
    make_hub_cache(tmp_path / "hub", "facebook/map-anything")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = load_model("facebook/map-anything")
    assert not model.training
    with pytest.raises(CheckpointNotFoundError):
        load_model("facebook/not-there")


# --- strict loading -------------------------------------------------------------------------------------


def test_tiny_fixture_loads_strictly(tiny_model):
    with safe_open(TINY / "model.safetensors", framework="pt") as f:
        keys = set(f.keys())
    state = tiny_model.state_dict()
    assert set(state) == keys
    assert not tiny_model.training
    for name, tensor in list(tiny_model.named_parameters()) + list(tiny_model.named_buffers()):
        assert tensor.device.type == "cpu", name
        assert not tensor.requires_grad, name
        assert tensor.dtype == torch.float32, name


def test_parameters_are_views_of_the_mapped_file(tiny_model):
    """Zero-copy load: parameter memory lies inside a mapping of model.safetensors (Linux /proc)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps")
    target = str((TINY / "model.safetensors").resolve())
    ranges = []
    for line in maps.read_text().splitlines():
        if line.endswith(target):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            ranges.append((start, end))
    params = list(tiny_model.parameters())
    inside = [any(a <= p.data_ptr() < b for a, b in ranges) for p in params]
    assert all(inside), f"{inside.count(False)} of {len(params)} parameters were copied"


def max_normalised_error(actual, reference):
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    rms = np.sqrt(np.mean(reference**2))
    return float(np.max(np.abs(actual - reference) / (np.abs(reference) + rms)))


def test_loaded_model_reproduces_fixture_case(tiny_model):
    case = np.load(TINY / "cases" / "c3_calib_pose_metric_4v.npz")
    meta = json.loads(str(case["__meta__"]))
    views = []
    for i in range(meta["num_views"]):
        view = {}
        for key in meta["view_input_keys"][i]:
            value = case[f"view{i}.{key}"]
            view[key] = value.tolist() if value.dtype.kind == "U" else torch.from_numpy(value)
        views.append(view)
    outputs = Runtime("cpu").run(tiny_model, views)
    for i, keys in enumerate(meta["output_keys"]):
        for key in keys:
            actual, reference = outputs[i][key].numpy(), case[f"out{i}.{key}"]
            assert actual.shape == reference.shape, (i, key)
            if reference.dtype == bool:
                logits = case[f"out{i}.non_ambiguous_mask_logits"]
                assert np.all((actual == reference) | (np.abs(logits) < 1e-4)), (i, key)
            else:
                assert max_normalised_error(actual, reference) < 1e-4, (i, key)


def test_missing_unexpected_and_misshaped_keys_are_all_named(tmp_path):
    state, metadata = fixture_state()
    del state["scale_token"]
    state["pose_head.extra.weight"] = torch.zeros(3)
    state["scale_head.proj.0.weight"] = torch.zeros(2, 2)  # stray name, does not exist in the network
    name = "encoder.model.pos_embed"
    state[name] = state[name][:, :-1]
    with pytest.raises(StateDictMismatchError) as err:
        load_model(tiny_copy(tmp_path, state, metadata))
    error = err.value
    assert error.missing == ["scale_token"]
    assert error.unexpected == ["pose_head.extra.weight", "scale_head.proj.0.weight"]
    assert list(error.mismatched) == [name]
    message = str(error)
    for text in ("1 missing key:", "scale_token", "2 unexpected keys:", "pose_head.extra.weight", name,
                 str(tmp_path / "model.safetensors")):
        assert text in message


def test_a_tensor_of_integers_where_the_model_has_floats_is_named(tmp_path):
    """A quantised (int8) checkpoint of the same names and shapes: named, not load_state_dict's
    RuntimeError."""
    state, metadata = fixture_state()
    state["scale_token"] = state["scale_token"].to(torch.int8)
    with pytest.raises(CheckpointError, match="scale_token is torch.int8, the model's is torch.float32"):
        load_model(tiny_copy(tmp_path, state, metadata))


def test_long_mismatch_lists_are_truncated_with_counts(tmp_path):
    state, metadata = fixture_state()
    dropped = sorted(state)[:25]
    for key in dropped:
        del state[key]
    with pytest.raises(StateDictMismatchError) as err:
        load_model(tiny_copy(tmp_path, state, metadata))
    message = str(err.value)
    assert "25 missing keys:" in message and "... and 15 more" in message
    assert dropped[0] in message and dropped[-1] not in message


@pytest.mark.parametrize("content", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage", b"not a safetensors file"])
def test_corrupt_weights_file_is_named(tmp_path, content):
    tiny_copy(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as err:
        load_model(tmp_path)
    assert str(tmp_path / "model.safetensors") in str(err.value)


def test_truncated_weights_file_is_named(tmp_path):
    tiny_copy(tmp_path)
    data = (TINY / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path)
    assert str(tmp_path / "model.safetensors") in str(err.value)


def test_upstream_alias_rule_matches_released_layout():
    """Every alias dropped from the released file (section 2 of the full key list) maps to its kept key."""
    lines = (FIXTURES / "mapanything_full_state_dict.txt").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# [2]"))
    pairs = [line.split("\t-> ") for line in lines[start + 1:] if "\t-> " in line]
    assert len(pairs) == 76
    for dropped, kept in pairs:
        assert canonical_key(dropped) == kept
        assert canonical_key(kept) == kept


def test_file_with_upstream_alias_names_loads(tmp_path, tiny_model):
    """A file saved with upstream's full state-dict names (aliases present, no metadata) loads identically."""
    state, metadata = fixture_state()
    renamed = {}
    for key, tensor in state.items():
        renamed[key.replace("dense_head.0.", "dpt_feature_head.").replace("dense_head.1.", "dpt_regressor_head.")] = tensor
    for dropped, kept in metadata.items():  # add the redundant copies too
        renamed[dropped] = state[kept].clone()
    model = load_model(tiny_copy(tmp_path, renamed))
    reference = tiny_model.state_dict()
    assert set(model.state_dict()) == set(reference)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[key]), key

    key = "dense_head.0.scratch.layer_rn.0.weight"  # one of three copies of input_process.0.1.weight
    renamed[key] = renamed[key] + 1
    save_file(renamed, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="differ"):
        load_model(tmp_path)


def test_file_alias_metadata_maps_other_kept_names(tmp_path):
    """A writer that kept another name of an alias group records it; the metadata maps it back."""
    state, _ = fixture_state()
    state["zz_scale_token"] = state.pop("scale_token")
    model = load_model(tiny_copy(tmp_path, state, {"scale_token": "zz_scale_token"}))
    assert torch.equal(model.scale_token, state["zz_scale_token"])


def test_explicit_dtype_is_applied():
    model = load_model(TINY, dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
