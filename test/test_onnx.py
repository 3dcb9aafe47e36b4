"""ONNX export of the network checked with onnxruntime against the upstream reference cases
(tiny random-weight fixture model, CPU), the feature cache, the CLI and the backend."""

import json

import numpy as np
import pytest
import torch

from mapanything_ros.backends import MapAnythingBackend, make_backend
from mapanything_ros.cli import main
from mapanything_ros.model import load_model
from mapanything_ros.model.inputs import modalities
from mapanything_ros.model.onnx import OnnxMapAnything, export_onnx, parse_combination
from mapanything_ros.settings import defaults
from mapanything_ros.window import BatchConfig, assemble

from model_fixtures import (TINY, case_names, case_views, check_outputs, load_case, needs_fixtures,
                            reference_outputs, tiny_model)

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (tools/requirements.txt)")
pytestmark = needs_fixtures

# which exported graph serves each reference case (a graph takes any subset of its inputs)
GRAPH = {"c1": "images", "c2": "rays_poses", "c3": "rays_poses", "c8": "rays_poses", "c4": "rays_poses_depth",
         "c5": "rays_poses_depth", "c6": "rays_poses_depth", "c7": "rays_poses_depth"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The node's three input combinations, any number of views, at the fixtures' 70 x 98."""
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    _, data = load_case("c1_images_only_2v")
    height, width = data["view0.img"].shape[-2:]
    manifest = export_onnx(tiny_model(), out, 3, height, width, dynamic_views=True)
    assert sorted(manifest["graphs"]) == ["images", "rays_poses", "rays_poses_depth"]
    return out


@pytest.mark.parametrize("name", case_names("forward"))
def test_onnxruntime_matches_reference(exported, name):
    model = OnnxMapAnything(exported, threads=1)
    views = case_views(name)
    assert model.graph_for(modalities(views))[0] == GRAPH[name[:2]]
    check_outputs(model(views), reference_outputs(name))


def test_fixed_view_graph_serves_fewer_views(tmp_path):
    """One graph exported for exactly 6 views (the default exporter, as for TensorRT) on every
    reference case (1 to 5 views, each input subset, batch 2): the views missing are padding that
    no token attends to, and the outputs are upstream's."""
    _, data = load_case("c1_images_only_2v")
    height, width = data["view0.img"].shape[-2:]
    export_onnx(tiny_model(), tmp_path, 6, height, width, combinations=[frozenset({"rays", "poses", "depth"})])
    model = OnnxMapAnything(tmp_path, threads=1)
    for name in case_names("forward"):
        views = case_views(name)
        assert len(views) < 6
        check_outputs(model(views), reference_outputs(name))


def test_onnxruntime_feature_cache(exported):
    """A sliding window encodes only its new image; outputs equal the uncached ones."""
    cached, plain = OnnxMapAnything(exported, feature_cache_size=3), OnnxMapAnything(exported)
    gen = torch.Generator().manual_seed(0)
    imgs = [torch.randn(1, 3, 70, 98, generator=gen) for _ in range(5)]
    for step in range(3):
        views = [{"img": imgs[i], "frame_id": i} for i in range(step, step + 3)]
        before = cached.images_encoded
        a, b = cached(views), plain(views)
        assert cached.images_encoded - before == (3 if step == 0 else 1)
        for va, vb in zip(a, b):
            for key in va:
                torch.testing.assert_close(va[key], vb[key], rtol=0, atol=0)
    assert plain.images_encoded == 9 and len(cached.feature_cache) == 3
    with pytest.raises(ValueError, match="different image"):
        cached([{"img": imgs[0], "frame_id": 4}, {"img": imgs[1], "frame_id": 3}])


def test_wrong_size_and_unknown_inputs_are_refused(exported):
    model = OnnxMapAnything(exported)
    with pytest.raises(ValueError, match="exported for 70x98"):
        model([{"img": torch.zeros(1, 3, 84, 98)}])
    with pytest.raises(ValueError, match="not available"):
        OnnxMapAnything(exported, providers=["tensorrt"])
    with pytest.raises(ValueError, match="unknown inputs"):
        parse_combination("rays+lidar")


def test_a_manifest_or_graph_that_is_not_an_export_is_named(exported, tmp_path):
    """A manifest without what export-onnx writes, or a graph file that is not ONNX: ValueErrors
    naming the file (they were a KeyError and onnxruntime's InvalidProtobuf)."""
    import shutil

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="manifest.json is not a manifest export-onnx wrote"):
        OnnxMapAnything(tmp_path / "empty")
    junk = shutil.copytree(exported, tmp_path / "junk")
    (junk / json.loads((junk / "manifest.json").read_text())["encoder"]).write_bytes(b"not a graph")
    with pytest.raises(ValueError, match="is not an ONNX graph"):
        OnnxMapAnything(junk)
    # A multi-view graph missing, or not ONNX: the backend does not start (it started, and every
    # window failed). A graph the parameters' inputs never use is loaded when first needed.
    graphs = json.loads((exported / "manifest.json").read_text())["graphs"]
    values = {**defaults(), "backend": "onnxruntime", "onnx_providers": "cpu", "cameras": ["a"]}
    for graph in ("rays_poses", "images"):
        gone = shutil.copytree(exported, tmp_path / f"gone_{graph}")
        (gone / graphs[graph]["file"]).unlink()
        with pytest.raises(FileNotFoundError, match=f"{graphs[graph]['file']} missing"):
            make_backend({**values, "weights": str(gone)})
        bad = shutil.copytree(exported, tmp_path / f"bad_{graph}")
        (bad / graphs[graph]["file"]).write_bytes(b"not a graph")
        if graph == "rays_poses":  # the graph of the default parameters' windows
            with pytest.raises(ValueError, match=f"{graphs[graph]['file']} is not an ONNX graph"):
                make_backend({**values, "weights": str(bad)})
        else:
            make_backend({**values, "weights": str(bad)})


def test_cli_static_export_and_backend(tmp_path, frames):
    """`export-onnx` (TorchScript exporter, fixed view count); the onnxruntime backend predicts what the
    torch one does."""
    out = tmp_path / "graphs"
    config = BatchConfig(long_side=140)  # 140 x 112 for these 4:3 cameras
    batch = assemble(frames, config)
    width, height = batch.size
    assert main(["export-onnx", "--weights", str(TINY), "--views", str(len(frames)), "--height", str(height),
                 "--width", str(width), "--inputs", "rays+poses+depth", "--exporter", "torchscript", str(out)]) == 0
    values = {**defaults(), "backend": "onnxruntime", "weights": str(out), "onnx_providers": "cpu",
              "cameras": ["a", "b"], "window_size": 2}
    backend, runtime = make_backend(values)
    assert runtime.describe()["device"] == "CPUExecutionProvider"
    assert runtime.feature_cache.max_items == 4
    pred = backend.predict(batch)
    ref = MapAnythingBackend(load_model(str(TINY))).predict(batch)
    for key in ("ray_directions", "depth_along_ray", "ref_from_camera", "confidence"):
        a, r = np.asarray(getattr(pred, key)), np.asarray(getattr(ref, key))
        assert np.max(np.abs(a - r)) <= 1e-4 * (np.abs(r).max() + 1), key
    assert np.mean(np.asarray(pred.mask) != np.asarray(ref.mask)) < 1e-3
    assert pred.metric_scale == pytest.approx(ref.metric_scale, rel=1e-5)
    # A filling window (fewer views than exported): padded views no token attends to; the same
    # prediction as the torch backend on those views alone (it was refused: "exactly N").
    for count in range(1, len(frames)):
        fewer = assemble(frames[:count], config)
        pred, ref = backend.predict(fewer), MapAnythingBackend(load_model(str(TINY))).predict(fewer)
        for key in ("ray_directions", "depth_along_ray", "ref_from_camera", "confidence"):
            a, r = np.asarray(getattr(pred, key)), np.asarray(getattr(ref, key))
            assert a.shape == r.shape and np.max(np.abs(a - r)) <= 1e-4 * (np.abs(r).max() + 1), (count, key)
        assert pred.metric_scale == pytest.approx(ref.metric_scale, rel=1e-5)
    with pytest.raises(ValueError, match=f"at most {len(frames)}"):
        backend.predict(assemble(list(frames) * 2, config))
