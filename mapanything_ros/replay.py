"""Offline replay of a rosbag2 (MCAP or sqlite3, read with rosbags: no ROS runtime) through the
node's session, with bag time as its clock, writing the node's outputs as files.

It reads the topics the node would subscribe to (resolved in `namespace`, then `remap`), feeds
TF into a TransformTree and every other message to the node's session.Session (threaded=False),
record time as its clock: the same keyframes, windows and outputs as the node (test_parity.py).
Messages recorded at one time go TF first, then CameraInfo, then the rest.

Outputs in `out_dir` (outputs.py has the formats):
  map.npz                         the map's volume (session.save_map; the node's ~/load_map and
                                  load_map_path read it), absent when nothing was mapped
  map.ply                         its surface points (binary PLY: x y z, rgb, confidence: the
                                  fused weight)
  map.mesh.ply                    its surface as a coloured triangle mesh (binary PLY)
  map.png                         top-down picture of the map with the camera path
  depth/<camera>/<stamp_ns>.png   per keyframe and camera: z-depth, 16-bit millimetres, 0 = none
  preview/<camera>/<stamp_ns>.png the camera image beside its coloured depth
  raw/<camera>/<stamp_ns>.png     with raw_depth: the network's own depth (bilinear, nothing of
                                  the package's: no edge cut, alignment, measured depth)
  poses/<camera>.txt              refined world_from_camera per keyframe (TUM format)
  summary.json                    counts, timings, memory, parameters, the files above
  bag/                            with write_bag: the node's output topics (+ the input TF)
<camera> is the camera's frame id ('/' -> '_'); <stamp_ns> the image stamp. A keyframe's depth and
pose are those of the window in which it is the newest capture (what the node publishes for it).
"""

import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import decode, interface, layout, outputs, settings
from .geometry.tf_tree import TransformTree
from .layout import absolute
from .mapping import reconstruct
from .mapping.ply import write_ply
from .progress import Progress
from .sync import LIDAR_SOURCE
from .session import WARN, Reporter, Session
from .session.report import kind_of
from .units import SEC

TF_TOPIC = "/tf"
_ORDER = {"tf_static": 0, "tf": 1, "info": 2}  # within one record time; everything else after
KINDS = {"image": "image", "image_compressed": "compressed", "camera_info": "info", "depth_image": "depth",
         "lidar": "lidar", "tf_in": "tf", "tf_static_in": "tf_static"}  # interface.ENDPOINTS key -> kind
PROBLEMS_KEPT = 20


def bag_cameras(connections, namespace="", compressed=False, depth_topic=layout.DEPTH_IMAGE_TOPIC):
    """(camera namespaces, {namespace: why not}) of a bag, relative to `namespace`: those with an
    image topic and a camera_info beside it, except a camera's registered depth image and its
    camera_info (`<ns>/<depth_topic>`), and those with only one of the two (a camera_info beside
    images of other names: the remap that would replay them)."""
    images = {c.topic for c in connections if c.msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")}
    topics = {c.topic for c in connections}
    image, info = layout.camera_topics("", compressed)
    prefix = absolute("", namespace).rstrip("/") + "/"
    halves = {}  # namespace -> which of (image, camera_info) it has
    for topic in sorted(topics):
        for i, suffix in enumerate((image, info)):
            cam = topic[len(prefix):-len(suffix)]
            if topic.endswith(suffix) and topic.startswith(prefix) and cam:
                halves.setdefault(cam, set()).add(i)
    depth = {layout.depth_image_topic(cam, depth_topic).rpartition("/")[0] for cam in halves}  # their namespaces
    found, unpaired = [], {}
    for cam, has in halves.items():
        if cam in depth:
            continue  # a camera's registered depth image, or its camera_info
        if has == {0, 1}:
            found.append(cam)
            continue
        mine = prefix + cam + (image if 0 in has else info)
        unpaired[cam] = f"{mine} without {prefix + cam + (info if 0 in has else image)}"
        others = sorted(t for t in images if t.rpartition("/")[0] == prefix + cam and t != prefix + cam + "/image_raw")
        if 1 in has and others:
            unpaired[cam] += f" (beside {', '.join(others)}: --remap {prefix + cam + image}:={others[0]} replays it)"
    return found, unpaired


def input_topics(values, namespace="", remap=None, node_name="mapanything"):
    """{bag topic: (kind, camera namespace or None)} the node subscribes to with parameters `values`.
    kind: image, compressed, info, depth, lidar, tf, tf_static. remap: {FROM: TO}, both resolved as
    rcl does for a node `node_name` in `namespace` (relative: in the namespace)."""
    remap = {absolute(k, namespace, node_name): absolute(v, namespace, node_name) for k, v in (remap or {}).items()}
    return {remap.get(absolute(name, namespace), absolute(name, namespace)): (KINDS[key], cam)
            for key, cam, name in interface.subscriptions(values)}


def camera_dir(frame_id):
    """Directory name of a camera frame id."""
    return frame_id.strip("/").replace("/", "_") or "camera"


def peak_rss_mb():
    """Peak resident memory of this process so far, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


# The message type of each kind of input topic (input_topics), and a field ROS 2's has and ROS 1's has not
# (a bag carries the definitions it was written with).
MSGTYPES = {kind: interface.ENDPOINTS[key].type for kind, key in (
    ("image", "image"), ("compressed", "image_compressed"), ("info", "camera_info"), ("depth", "depth_image"),
    ("lidar", "lidar"), ("tf", "tf_in"), ("tf_static", "tf_static_in"))}
_ROS2_FIELD = {"info": "k", "image": "step", "depth": "step", "compressed": "format", "lidar": "point_step",
               "tf": "transforms", "tf_static": "transforms"}


def _check_fields(msg, kind, topic):
    """ValueError unless `msg` has the ROS 2 fields of its kind (a bag written with another ROS's
    message definitions: ROS 1's CameraInfo K and D, its Time secs and nsecs)."""
    if kind in ("tf", "tf_static"):
        stamped = [getattr(tf, "header", None) for tf in getattr(msg, "transforms", [])[:1]]
    else:
        stamped = [getattr(msg, "header", None)]
    if not hasattr(msg, _ROS2_FIELD[kind]) or not all(hasattr(getattr(h, "stamp", None), "nanosec") for h in stamped):
        raise ValueError(f"{topic}: its messages are not {MSGTYPES[kind]} as ROS 2 defines it (the bag carries "
                         "another ROS's definition of it)")


REPLAY_MARKER = ".mapanything_replay"


def fresh_output(out, marker, tool):
    """Make `out` an empty directory for `tool`'s outputs ("replay", "demo"), holding `marker`: a
    previous run's (it holds the marker) is removed, a directory holding anything else refused
    (FileExistsError), so the outputs of two runs never mix (an evaluation globbed both's depth)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file: choose a directory for --out")
    if out.exists() and any(out.iterdir()):
        if not (out / marker).exists():
            raise FileExistsError(f"{out} holds files {tool} did not write: choose an empty or new --out")
        shutil.rmtree(out)  # a previous run's outputs
    out.mkdir(parents=True, exist_ok=True)
    (out / marker).write_text(f"written by `mapanything-ros {tool}`; the next {tool} run into this directory "
                              "replaces it\n")


def _ordered(messages, kinds):
    """The bag's (connection, time, raw) in time order; ties: TF, then CameraInfo, then the rest."""
    group, group_time = [], None
    for conn, t, raw in messages:
        if t != group_time and group:
            yield from sorted(group, key=lambda m: _ORDER.get(kinds[m[0].topic][0], 3))
            group = []
        group_time = t
        group.append((conn, t, raw))
    yield from sorted(group, key=lambda m: _ORDER.get(kinds[m[0].topic][0], 3))


class _Writer:
    """The replay's outputs of each session.WindowOutput: files, and the output bag's messages (on
    the node's topics, in `namespace`). An exception (a full disk) is kept in `failed` for the
    replay to raise: the session only reports those."""

    def __init__(self, values, out_dir, bag, raw_depth, namespace):
        self.p, self.out, self.bag, self.raw_depth = values, out_dir, bag, raw_depth
        self.namespace = namespace
        self.failed = None
        self.now = 0  # bag time of the message being handled: the record time of outputs
        self.keyframes = {}  # frame_id -> [(image stamp, world_from_camera)]
        self.namespaces = {}  # frame_id -> camera namespace
        self.last_preview = None
        self.frame_id = values["world_frame"]
        self.map_since_ns = None  # stamp of the window after which the map was last cleared
        self.next_map_ns = None

    def topic(self, key, camera=None):
        """The name of the node's output interface.ENDPOINTS[key] (for `camera`)."""
        name = interface.resolve(interface.ENDPOINTS[key].name, self.p, **({} if camera is None else {"ns": camera}))
        return absolute(name, self.namespace, self.p["node_name"])

    def __call__(self, out):
        try:
            self.write(out)
        except Exception as err:
            self.failed = self.failed or err
            raise

    def write(self, out):
        recon, now = out.reconstruction, self.now
        self.frame_id = out.frame_id
        if out.result.map_reset is not None:
            self.map_since_ns = min(f.stamp_ns for f in recon.frames)
        raw = None
        if self.raw_depth:
            raw = reconstruct(recon.batch, recon.prediction, views=recon.selected, edge_threshold=None,
                              device="numpy").views
        for k, cam in enumerate(out.cameras):
            view, name = out.view(cam), camera_dir(cam.frame_id)
            for sub in ("depth", "preview") + (("raw",) if raw else ()):
                (self.out / sub / name).mkdir(parents=True, exist_ok=True)
            if raw is not None:
                outputs.write_depth_png(self.out / "raw" / name / f"{cam.stamp_ns}.png", raw[k].depth)
            outputs.write_depth_png(self.out / "depth" / name / f"{cam.stamp_ns}.png", view.depth)
            self.last_preview = self.out / "preview" / name / f"{cam.stamp_ns}.png"
            outputs.write_png(self.last_preview, outputs.depth_preview(view.frame.image, view.depth))
            self.keyframes.setdefault(cam.frame_id, []).append((cam.stamp_ns, view.world_from_camera))
            self.namespaces[cam.frame_id] = cam.camera
            if self.bag is not None:
                depth = np.where(np.isfinite(view.depth) & (view.depth > 0), view.depth, np.nan)
                stamped = (cam.frame_id, cam.stamp_ns)
                self.bag.write(self.topic("depth", cam.camera), self.bag.float_image(depth, *stamped), now)
                self.bag.write(self.topic("confidence", cam.camera), self.bag.float_image(view.confidence, *stamped),
                               now)
                self.bag.write(self.topic("camera_info_out", cam.camera), self.bag.camera_info(cam.info, *stamped),
                               now)
                rect_depth, rect = out.rectified(cam)
                self.bag.write(self.topic("depth_rect", cam.camera), self.bag.float_image(rect_depth, *stamped), now)
                self.bag.write(self.topic("camera_info_rect", cam.camera),
                               self.bag.rectified_info(cam.info, rect, *stamped), now)
        if self.bag is None:
            return
        if out.transforms:
            self.bag.write(TF_TOPIC, self.bag.tf(out.transforms), now)
        self.bag.write(self.topic("points"), self.bag.cloud(*out.points(), out.frame_id, out.stamp_ns), now)
        if self.bag.has_window:
            self.bag.write(self.topic("window"), self.bag.window(out), now)

    def publish_map(self, session, now, force=False):
        """Record ~/map at map_publish_rate of bag time (and once at the end)."""
        rate = self.p["map_publish_rate"]
        if self.bag is None or (not force and (rate <= 0 or (self.next_map_ns is not None and now < self.next_map_ns))):
            return
        self.next_map_ns = now + int(SEC / rate) if rate > 0 else None
        snap, frame_id, stamp = session.map(now)
        self.bag.write(self.topic("map"), self.bag.cloud(snap.points, snap.colors, snap.confidence, frame_id, stamp),
                       now, transient_local=True)


def replay(bag_path, params=None, out_dir="out/replay", backend=None, progress=True, write_bag=False,
           namespace="", remap=None, node_name="mapanything", raw_depth=False):
    """Replay a rosbag2 through the session and write the outputs (module doc); returns the summary dict.

    params: parameter values (settings.SPECS names) over settings.defaults(); cameras None: every
    camera namespace of the bag (bag_cameras). backend: a backends.Backend, or None to make the one
    the parameters name (backends.make_backend). progress: True draws on a terminal, "force"
    always, False never. write_bag: also write out_dir/bag (same storage as the input).
    namespace, remap ({resolved topic: bag topic}), node_name: as the node's. raw_depth: also write
    the network's unprocessed depth (out_dir/raw, see the module doc).
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import get_typestore

    from .backends import make_backend
    from .bag.synthetic import TYPESTORE

    started = time.perf_counter()
    bag_path, out = Path(bag_path), Path(out_dir)
    values = {**settings.defaults(), **(params or {}), "node_name": node_name}
    if bag_path.resolve().is_relative_to(out.resolve()):  # (its bag replayed into the same --out)
        raise ValueError(f"{bag_path} lies in --out {out}, whose earlier outputs a run replaces: choose another --out")
    with AnyReader([bag_path], default_typestore=get_typestore(TYPESTORE)) as reader:
        unpaired = {}
        if values["cameras"] is None:
            values["cameras"], unpaired = bag_cameras(reader.connections, namespace,
                                                      values["image_transport"] == "compressed",
                                                      values["depth_image_topic"])
            if not values["cameras"]:
                images = sorted(c.topic for c in reader.connections if c.msgtype in ("sensor_msgs/msg/Image",
                                                                                   "sensor_msgs/msg/CompressedImage"))
                ns = absolute("", namespace).rstrip("/") or "/"
                raise ValueError(f"no camera under namespace {ns!r} in {bag_path} (an image topic with camera_info "
                                 f"beside it); its image topics: {images}")
        found = settings.problems(values)
        if found:
            raise ValueError("bad parameters: " + "; ".join(found.values()))
        kinds = input_topics(values, namespace, remap, node_name)
        present = {c.topic for c in reader.connections if c.msgcount}  # (a topic of 0 messages is missing too)
        missing = sorted(t for t, (k, _) in kinds.items() if k not in ("tf", "tf_static", "depth") and t not in present)
        conns = [c for c in reader.connections if c.topic in kinds]
        wrong = [f"{c.topic} is {c.msgtype}, not {MSGTYPES[kinds[c.topic][0]]}" for c in conns
                 if c.msgtype != MSGTYPES[kinds[c.topic][0]]]
        if wrong:
            raise ValueError(f"{bag_path}: " + "; ".join(wrong))
        runtime, made = None, backend is None
        if made:
            backend, runtime = make_backend(values)
        fresh_output(out, REPLAY_MARKER, "replay")  # (once the bag, parameters and backend are known good)
        storage = "sqlite3" if any(bag_path.glob("*.db3")) or bag_path.suffix == ".db3" else "mcap"
        bag = outputs.OutputBag(out / "bag", storage) if write_bag else None
        problems = {}
        for cam, why in unpaired.items():  # (a user could not tell why completeness halved)
            _count(problems, ("replay", "cameras", WARN, f"camera {cam} left out: {why} in the bag (--cameras "
                                                        "names the cameras to replay)"))
        writer = _Writer(values, out, bag, raw_depth, namespace)
        tree = TransformTree()
        names = {"image": "image", "compressed": "image", "info": "info", "depth": "depth", "lidar": "depth"}
        topics = {(names[k], cam or LIDAR_SOURCE): t for t, (k, cam) in kinds.items() if k in names}
        session = Session(values, backend, tree.lookup, Reporter(lambda *a: _count(problems, a)), writer,
                          threaded=False, topics=topics,
                          clock_hint="bag's record time: were the stamps written on another clock?")
        total = sum(c.msgcount for c in conns if kinds[c.topic][0] in ("image", "compressed"))
        bar = None if progress is False else Progress("replay", "frames", enabled=None if progress is True else True)
        counts, done, now, first = {}, 0, 0, None
        try:
            for conn, now, raw in _ordered(reader.messages(connections=conns), kinds):
                first = now if first is None else first
                kind, cam = kinds[conn.topic]
                counts[conn.topic] = counts.get(conn.topic, 0) + 1
                msg = reader.deserialize(raw, conn.msgtype)
                _check_fields(msg, kind, conn.topic)
                writer.now = now
                if kind in ("tf", "tf_static"):
                    if bag is not None:
                        bag.write_raw(conn.topic, conn.msgtype, raw, now, transient_local=kind == "tf_static")
                    static = kind == "tf_static"
                    for tf, (parent, child, stamp, pose) in zip(msg.transforms, decode.transforms(msg)):
                        if session.tf_refusal(tf, now, static):
                            continue
                        try:
                            tree.set_transform(parent, child, stamp, pose, static=static)
                        except ValueError as err:
                            session.bad_input("tf", "input", WARN, f"{conn.topic}: {err}")
                elif kind == "info":
                    session.camera_info(cam, msg)
                elif kind in ("image", "compressed"):
                    session.image(cam, msg, now)
                    done += 1
                    if bar is not None:
                        bar.update(done, total)
                elif kind == "lidar":
                    session.lidar(msg, now)
                else:
                    session.depth_image(cam, msg, now)
                session.tick(now)
                writer.publish_map(session, now)
                if writer.failed:
                    raise writer.failed
            session.finish(now)
            session.check_map()
            if writer.failed:
                raise writer.failed
            writer.publish_map(session, now, force=True)
        finally:
            if bar is not None:
                bar.close()
            if bag is not None:
                bag.close()
    summary = _finish(session, writer, problems, values, bag_path, out, counts, first, now, missing, bag,
                      backend, made, runtime)
    wall = time.perf_counter() - started
    summary["timings"] = {"wall_s": wall, "frames_per_s": summary["frames"] / wall if wall > 0 else 0.0,
                          "window_latency_s": session.pipeline.stats().latency}
    summary["memory"] = {"peak_rss_mb": peak_rss_mb()}
    outputs.write_json(out / "summary.json", summary)
    return summary


def _count(problems, report):
    """The replay's Reporter sink: problems counted by kind (report.kind_of), with the latest message."""
    kind = kind_of(*report[:4])
    problems[kind] = (problems.get(kind, (0,))[0] + 1, report[3])


def _finish(session, writer, problems, values, bag_path, out, counts, first, last, missing, bag, backend, made,
            runtime):
    """Write the map, its picture and the trajectories; the summary without timings and memory."""
    snap = session.pipeline.map_points()
    saved = len(session.pipeline.map) > 0
    if saved:
        n, _ = session.save_map(str((out / "map.npz").resolve()))
    else:
        n = write_ply(out / "map.ply", snap.points, snap.colors, snap.confidence)
    poses = np.array([pose for frames in writer.keyframes.values() for _, pose in frames]).reshape(-1, 4, 4)
    up = (0.0, 0.0, 1.0) if writer.frame_id == values["world_frame"] or not len(poses) else outputs.up_vector(poses)
    path = []
    if writer.keyframes:
        path = np.array([pose[:3, 3] for _, pose in next(iter(writer.keyframes.values()))])
    outputs.write_png(out / "map.png", outputs.render_map(snap.points, snap.colors, path, up,
                                                          pixel=values["map_voxel_size"]))
    (out / "poses").mkdir(exist_ok=True)
    cameras = {}
    for frame_id, frames in writer.keyframes.items():
        name = camera_dir(frame_id)
        lines = [f"# refined world_from_camera of {frame_id} in frame {writer.frame_id}: stamp tx ty tz qx qy qz qw"]
        lines += [outputs.tum_line(stamp, pose) for stamp, pose in frames]
        (out / "poses" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        cameras[frame_id] = {"namespace": writer.namespaces[frame_id], "keyframes": len(frames),
                             "depth": f"depth/{name}", "preview": f"preview/{name}", "trajectory": f"poses/{name}.txt",
                             "raw_depth": f"raw/{name}" if writer.raw_depth else None}
    st = session.stats()
    stats, sync = st["pipeline"], st["sync"]
    return {
        "bag": str(bag_path),
        "backend": values["backend"] if made else type(backend).__name__,
        "device": runtime.describe() if runtime is not None else None,
        "parameters": {k: v for k, v in values.items() if k != "node_name"},
        "missing_topics": missing,
        "messages": counts,
        "bag_duration_s": (last - first) / SEC if first is not None else 0.0,
        "images": st["images"],
        "frames": st["frames"],
        "captures": stats.captures,
        "keyframes": stats.keyframes,
        "windows": stats.done,
        "windows_failed": stats.failed,
        "window_resets": stats.window_resets,
        "map_resets": stats.map_resets,
        "dropped": {**st["drops"], **{f"sync_{k}": v for k, v in sync["dropped"].items()}},
        "problems": {message: count for count, message in list(problems.values())[:PROBLEMS_KEPT]},
        "pose_frame": writer.frame_id,
        "map_since_ns": writer.map_since_ns,
        "cameras": cameras,
        "map": {"points": n, "voxel_size": values["map_voxel_size"]},
        "outputs": {"map": "map.ply", "map_volume": "map.npz" if saved else None, "map_picture": "map.png",
                    "summary": "summary.json",
                    "last_preview": str(writer.last_preview.relative_to(out)) if writer.last_preview else None,
                    "bag": "bag" if bag is not None else None,
                    "bag_topics": bag.counts if bag is not None else None,
                    "window_topic": None if bag is None else bag.has_window},
    }
