"""Topic and frame names shared by the node's defaults, the live player and the synthetic bags.

Sensor topics are relative names (resolved in the node's namespace: `/` + name at the root);
ground-truth topics are absolute. Frames follow REP 105: odometry `odom` -> `base_link` -> sensors.
"""

from .units import SEC

WORLD_FRAME = "odom"
BASE_FRAME = "base_link"
LIDAR_FRAME = "lidar"
LIDAR_TOPIC = "lidar/points"
DEPTH_IMAGE_TOPIC = "depth/image_raw"
TRUTH_PREFIX = "/ground_truth"
SURFACE_TOPIC = f"{TRUTH_PREFIX}/surface"
# The first stamp of synthetic runs: 1 s, not 0, since a stamp of 0 means "latest" to TF lookups.
START_NS = SEC


def camera_topics(namespace, compressed=False):
    """(image topic, camera_info topic) of a camera namespace: `<ns>/image_raw[/compressed]`, `<ns>/camera_info`."""
    image = f"{namespace}/image_raw/compressed" if compressed else f"{namespace}/image_raw"
    return image, f"{namespace}/camera_info"


def depth_image_topic(namespace, relative=DEPTH_IMAGE_TOPIC):
    """Registered depth image topic of a camera namespace: `<ns>/<relative>`."""
    return f"{namespace}/{relative}"


def ground_truth_topics(camera):
    """(true depth topic, true pose topic) of a camera frame id in synthetic bags (absolute)."""
    return f"{TRUTH_PREFIX}/{camera}/depth", f"{TRUTH_PREFIX}/{camera}/pose"


def absolute(topic, namespace="", node=""):
    """The absolute name a node `node` in `namespace` (default: the root) resolves `topic` to, as
    rcl does: "~/x" -> /<namespace>/<node>/x, a relative "x" -> /<namespace>/x, "/x" stays."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if topic.startswith("~/"):
        return f"{ns}/{node}/{topic[2:]}"
    return topic if topic.startswith("/") else f"{ns}/{topic}"
