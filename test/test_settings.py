"""Parameter files, defaults and what the parameters configure, without ROS (mapanything_ros.settings)."""

import subprocess
import sys
from pathlib import Path

import pytest

from mapanything_ros import settings
from mapanything_ros.session.config import make_sync, pipeline_config
from mapanything_ros.sync import LIDAR_SOURCE

CONFIG = Path(__file__).resolve().parents[1] / "config"


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["mapping.yaml", "depth_completion.yaml", "image_only.yaml"])
def test_presets_load_over_the_defaults(name):
    values = settings.load_params_file(CONFIG / name)
    assert set(values) == set(settings.SPECS) and settings.problems(values) == {}
    assert values["cameras"] == ["front_optical", "left_fisheye_optical"]


def test_sections_for_this_node_apply_in_file_order(tmp_path):
    path = write(tmp_path, """
/**:
  ros__parameters: {cameras: [a], window_size: 4, use_depth: false}
/robot/mapanything:
  ros__parameters: {window_size: 6}
other_node:
  ros__parameters: {not_ours: 1}
""")
    values = settings.load_params_file(path)
    assert values["cameras"] == ["a"] and values["window_size"] == 6 and values["use_depth"] is False
    assert values["sync_slop"] == settings.SPECS["sync_slop"].default
    assert settings.load_params_file(path, node_name="other")["window_size"] == 4  # only /** applies


def test_every_problem_is_listed(tmp_path):
    path = write(tmp_path, """
mapanything:
  ros__parameters: {window_sizes: 4, sync_slop: 1, long_side: 500, depth_source: radar, map_min_confidence: 2.0}
""")
    with pytest.raises(ValueError) as err:
        settings.load_params_file(path)
    message = str(err.value)
    for part in ("unknown parameter 'window_sizes'", "sync_slop must be a double", "long_side must be a multiple",
                 "depth_source must be one of", "'map_min_confidence' (replaced by map_confidence_quantile"):
        assert part in message


def test_a_file_for_other_nodes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no parameters for node"):
        settings.load_params_file(write(tmp_path, "player:\n  ros__parameters: {rate: 1.0}\n"))


def test_required_cameras_and_bad_values_are_problems():
    values = settings.defaults()
    assert settings.problems(values) == {"cameras": "parameter cameras (string[]) is required: the camera namespaces, "
                                                    "e.g. -p cameras:=\"[front_optical]\" or cameras: [front_optical] "
                                                    "in the parameter file"}
    assert settings.problems({**values, "cameras": ["a", "a"], "device": "gpu"}) == {
        "cameras": "cameras must be a non-empty list of distinct namespaces, got ['a', 'a']",
        "device": "device must be auto, cpu, cuda or cuda:N, got 'gpu'"}
    assert settings.problems({**values, "cameras": ["front", "/front"]}) == {  # a hostile tester's: accepted,
        "cameras": "cameras must be distinct without their slashes (each has outputs ~/<namespace>/...), got "  # then
                   "['front', '/front']"}  # every capture was dropped with advice to fix the drivers' frame_id


def test_pipeline_config_and_sync_follow_the_parameters():
    values = {**settings.defaults(), "cameras": ["a", "b"], "window_size": 5, "use_poses": False,
              "long_side": 224, "map_voxel_size": 0.1, "sync_slop": 0.03, "depth_source": "lidar"}
    cfg = pipeline_config(values)
    assert (cfg.window_size, cfg.batch.use_poses, cfg.batch.long_side, cfg.voxel_size) == (5, False, 224, 0.1)
    sync = make_sync(values)
    assert sync.cameras == ["a", "b"] and sync.slop_ns == 30_000_000 and sync.depth_sources == [LIDAR_SOURCE]
    assert make_sync({**values, "depth_source": "depth_image"}).depth_sources == ["a", "b"]
    assert make_sync({**values, "depth_source": "none"}).depth_sources == []


def test_type_names_cover_every_spec():
    assert {s.type_name for s in settings.SPECS.values()} == {"bool", "integer", "double", "string", "string_array"}


def test_offline_modules_import_no_ros():
    code = ("import sys\n"
            "import mapanything_ros.backends, mapanything_ros.bag, mapanything_ros.decode, mapanything_ros.docs, "
            "mapanything_ros.session, mapanything_ros.interface, mapanything_ros.layout, mapanything_ros.settings\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'sensor_msgs', 'std_msgs', "
            "'tf2_msgs', 'rcl_interfaces') or m.startswith('mapanything_ros.ros')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_oracle_knows_every_synthetic_preset():
    """settings spells the presets out (the node must not import the synthetic world to start)."""
    from mapanything_ros.synthetic.presets import PRESETS

    assert tuple(settings.SPECS["oracle_preset"].choices) == PRESETS
