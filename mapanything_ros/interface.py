"""The node's ROS interface as data (ROS-free): topics, services and the TF frames it publishes.

The node creates its publishers, subscriptions and services from ENDPOINTS (names, message
types, QoS), and `python -m mapanything_ros.docs` renders the same tables into docs/node.md.
Names are patterns: `{ns}` a camera namespace of `cameras`, `{out}` the same without leading or
trailing slashes, `{<parameter>}` a parameter's value; `~/` is the node's private namespace.
"""

from dataclasses import dataclass, field

from .layout import camera_topics, depth_image_topic

CAMERA_FIELDS = ("ns", "out")

# QoS profiles by name: what the docs say. ros/node.py maps each name to an rclpy QoSProfile.
QOS = {
    "input": "parameter qos: sensor_data (best effort, depth 5) or reliable (depth 10)",
    "depth5": "reliable, depth 5",
    "depth10": "reliable, depth 10",
    "latched": "reliable, transient local, depth 1",
    "tf": "reliable, depth 100",
    "tf_static": "reliable, transient local, depth 100",
}


@dataclass(frozen=True)
class Endpoint:
    """One topic or service of the node.

    kind: "subscription", "publisher" or "service"; name: pattern (see module doc); type: ROS
    interface type ("sensor_msgs/msg/Image"); qos: a key of QOS ("" for services); when:
    {parameter: values} under which it exists (all must hold; empty: always).
    """

    kind: str
    name: str
    type: str
    qos: str
    description: str
    when: dict = field(default_factory=dict)

    @property
    def per_camera(self):
        """True when there is one per camera namespace."""
        return any("{" + f + "}" in self.name for f in CAMERA_FIELDS)


_IMAGE, _INFO = camera_topics("{ns}")
_COMPRESSED, _ = camera_topics("{ns}", compressed=True)
_TF_ON = ("map_odom", "camera_refined")

ENDPOINTS = {
    # inputs
    "image": Endpoint("subscription", _IMAGE, "sensor_msgs/msg/Image", "input",
                      "camera image (rgb8, bgr8, rgba8, bgra8, mono8, their 16-bit forms, bayer_*)",
                      {"image_transport": ("raw",)}),
    "image_compressed": Endpoint("subscription", _COMPRESSED, "sensor_msgs/msg/CompressedImage", "input",
                                 "camera image, jpeg or png", {"image_transport": ("compressed",)}),
    "camera_info": Endpoint("subscription", _INFO, "sensor_msgs/msg/CameraInfo", "input",
                            "calibration (plumb_bob, rational_polynomial, equidistant; ROI and binning); each image "
                            "takes the one of its stamp (else the newest)"),
    "depth_image": Endpoint("subscription", depth_image_topic("{ns}", "{depth_image_topic}"),
                            "sensor_msgs/msg/Image", "input",
                            "registered depth (16UC1 mm or 32FC1 m; 0, NaN, ±inf and values beyond 100,000 km are "
                            "no reading), same size as the camera image",
                            {"depth_source": ("depth_image",)}),
    "lidar": Endpoint("subscription", "{lidar_topic}", "sensor_msgs/msg/PointCloud2", "input",
                      "LiDAR sweep; per-point time fields (t, time, timestamp, ...) give motion compensation; "
                      "points with a coordinate NaN or ±inf are dropped, and (said) beyond 100,000 km or with a NaN "
                      "or infinite time",
                      {"depth_source": ("lidar",)}),
    "tf_in": Endpoint("subscription", "/tf", "tf2_msgs/msg/TFMessage", "tf",
                      "world_frame <- camera poses at the image stamps; camera <- LiDAR extrinsics"),
    "tf_static_in": Endpoint("subscription", "/tf_static", "tf2_msgs/msg/TFMessage", "tf_static",
                             "fixed transforms (sensor mounting)"),
    # outputs
    "points": Endpoint("publisher", "~/points", "sensor_msgs/msg/PointCloud2", "depth5",
                       "points of the newest capture (or the window, points_scope) at the model pixels: x, y, z, rgb, "
                       "confidence"),
    "map": Endpoint("publisher", "~/map", "sensor_msgs/msg/PointCloud2", "latched",
                    "the map's surface (zero crossings of its TSDF): x, y, z, rgb, confidence (the fused weight), at "
                    "map_publish_rate when the map changed"),
    "occupancy": Endpoint("publisher", "~/occupancy", "nav_msgs/msg/OccupancyGrid", "latched",
                          "the map's height band occupancy_min_height .. occupancy_max_height of world_frame: -1 "
                          "unknown, 0 free, 100 occupied, at map_publish_rate when the map or the band changed (with poses "
                          "only: world z up)"),
    "esdf": Endpoint("publisher", "~/esdf", "sensor_msgs/msg/PointCloud2", "latched",
                     "the occupancy grid's distance field (2D ESDF): a point at each known cell's centre at height "
                     "occupancy_min_height with x, y, z, distance (m to the nearest occupied cell's centre, 0 in "
                     "occupied cells, at most esdf_max_distance), at map_publish_rate when the map or its "
                     "parameters changed (with poses only)"),
    "mesh": Endpoint("publisher", "~/mesh", "visualization_msgs/msg/MarkerArray", "latched",
                     "the map's surface as a coloured triangle mesh (surface nets on its TSDF), a TRIANGLE_LIST marker "
                     "per region of 16³ blocks: at mesh_publish_rate when the map changed, the regions that changed "
                     "(DELETE for those gone); every region after a DELETEALL when a subscriber joined, the map's "
                     "storage changed (reset, load) or mesh_refresh_period passed. A display that applies "
                     "every array shows the whole mesh; the topic keeps the last array only"),
    "depth": Endpoint("publisher", "~/{out}/depth", "sensor_msgs/msg/Image", "depth5",
                      "32FC1 z-depth (m, NaN = none) of the newest capture"),
    "depth_rect": Endpoint("publisher", "~/{out}/depth_rect", "sensor_msgs/msg/Image", "depth5",
                           "32FC1 z-depth of the newest capture rectified to the pinhole camera of its CameraInfo "
                           "(P, R; as image_proc rectifies), for depth_image_proc, nvblox, RTAB-Map"),
    "camera_info_rect": Endpoint("publisher", "~/{out}/camera_info_rect", "sensor_msgs/msg/CameraInfo", "depth5",
                                 "the pinhole CameraInfo of depth_rect (K = P[:3, :3], no distortion, R identity)"),
    "confidence": Endpoint("publisher", "~/{out}/confidence", "sensor_msgs/msg/Image", "depth5",
                           "32FC1 confidence of the newest capture"),
    "camera_info_out": Endpoint("publisher", "~/{out}/camera_info", "sensor_msgs/msg/CameraInfo", "depth5",
                                "the CameraInfo of the published depth"),
    "window": Endpoint("publisher", "~/window", "mapanything_ros/msg/ReconstructionWindow", "depth10",
                       "the window's refined poses, stamps, inputs used, metric scale"),
    "tf_out": Endpoint("publisher", "/tf", "tf2_msgs/msg/TFMessage", "tf",
                       "the TF frames below", {"tf_output": _TF_ON}),
    "diagnostics": Endpoint("publisher", "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", "depth10",
                            "pipeline, per camera, sync, tf and depth statuses at 1 Hz, named after the node's full "
                            "name (/robot1/mapanything: pipeline); hardware_id: the sensor a status is about (a camera's "
                            "image topic, the LiDAR's topic), else the backend's device"),
    # services
    "reset": Endpoint("service", "~/reset", "std_srvs/srv/Trigger", "",
                      "clear the window, the map, the captures waiting for TF and the buffered dynamic TF"),
    "save_map": Endpoint("service", "~/save_map", "mapanything_ros/srv/MapFile", "",
                         "save the map (.npz, its surface as .ply and its mesh as .mesh.ply beside it) to the path "
                         "asked (empty: save_map_path)"),
    "load_map": Endpoint("service", "~/load_map", "mapanything_ros/srv/MapFile", "",
                         "replace the map by a saved one (empty path: save_map_path) and map on from it"),
}


@dataclass(frozen=True)
class TfOutput:
    """A transform the node publishes: parent and child frame patterns (`{frame_id}`: a camera's
    optical frame), when (parameter values), description."""

    parent: str
    child: str
    when: dict
    description: str


TF_OUTPUTS = {
    "map_odom": TfOutput("{map_frame}", "{world_frame}", {"tf_output": ("map_odom",)},
                         "odometry correction: refined pose of the newest reference camera times its TF pose^-1"),
    "camera_refined": TfOutput("{world_frame}", "{frame_id}_refined", {"tf_output": ("camera_refined",)},
                               "refined pose of each camera of the newest capture (image-only: parent map_frame)"),
}


def enabled(item, values):
    """True when an Endpoint or TfOutput exists under the parameters `values`."""
    return all(values[name] in allowed for name, allowed in item.when.items())


def subscriptions(values):
    """[(endpoint key, camera namespace or None, name)] of the node's subscriptions under the
    parameters `values` (names unresolved: see absolute)."""
    found = []
    for key, e in ENDPOINTS.items():
        if e.kind == "subscription" and enabled(e, values):
            for cam in (values["cameras"] if e.per_camera else [None]):
                found.append((key, cam, resolve(e.name, values, **({} if cam is None else {"ns": cam}))))
    return found


def resolve(pattern, values, **fields):
    """A name pattern filled in from the parameters `values` and `fields` (ns=camera namespace -> also out)."""
    if "ns" in fields:
        fields.setdefault("out", fields["ns"].strip("/"))
    return pattern.format(**{**values, **fields})
