"""The node reference (docs/node.md) is generated from settings.SPECS and interface (mapanything_ros.docs)."""

from pathlib import Path

import pytest

from mapanything_ros import docs, interface, layout
from mapanything_ros.settings import SPECS, defaults

NODE_DOC = Path(__file__).resolve().parents[1] / "docs" / "node.md"


def test_node_reference_is_current():
    text = NODE_DOC.read_text()
    assert docs.update(text) == text, f"docs/node.md's generated section is out of date: run `{docs.COMMAND}`"



def test_update_replaces_only_the_section_and_is_idempotent():
    text = f"# Title\n\nbefore\n{docs.BEGIN}\nstale table\n{docs.END}\nafter\n"
    new = docs.update(text)
    assert new.startswith("# Title\n\nbefore\n" + docs.BEGIN) and new.endswith(docs.END + "\nafter\n")
    assert "stale table" not in new and docs.update(new) == new
    with pytest.raises(ValueError, match="GENERATED"):
        docs.update("no markers here")


def test_every_parameter_and_endpoint_is_a_table_row():
    rows = docs.render().splitlines()
    for name in SPECS:
        assert sum(r.startswith(f"| `{name}` |") for r in rows) == 1, name
    for e in interface.ENDPOINTS.values():
        assert any(r.startswith(f"| `{e.name.replace('{', '<').replace('}', '>')}` | `{e.type}` |") for r in rows)


def test_depth_tolerance_pipe_does_not_split_the_table():
    row = next(r for r in docs.parameter_table().splitlines() if r.startswith("| `depth_tolerance` |"))
    assert row.count(" | ") == 5 and "\\|depth stamp - image stamp\\|" in row


def test_interface_names_follow_the_layout_and_parameters():
    values = {**defaults(), "cameras": ["front"], "depth_source": "depth_image"}
    e = interface.ENDPOINTS
    assert (interface.resolve(e["image"].name, values, ns="front"),
            interface.resolve(e["camera_info"].name, values, ns="front")) == layout.camera_topics("front")
    assert interface.resolve(e["image_compressed"].name, values, ns="front") == \
        layout.camera_topics("front", compressed=True)[0]
    assert interface.resolve(e["depth_image"].name, values, ns="front") == layout.depth_image_topic("front")
    assert interface.resolve(e["lidar"].name, values) == layout.LIDAR_TOPIC
    assert interface.resolve(e["depth"].name, values, ns="/front/") == "~/front/depth"
    assert interface.enabled(e["depth_image"], values) and not interface.enabled(e["lidar"], values)
    assert not interface.enabled(e["tf_out"], {**values, "tf_output": "none"})
    assert all(x.qos in interface.QOS for x in e.values() if x.kind != "service")
