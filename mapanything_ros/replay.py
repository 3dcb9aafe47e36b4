"""Offline replay of a rosbag2 (MCAP or sqlite3, read with rosbags: no ROS runtime) through the
node's pipeline, and evaluation of its outputs against a synthetic bag's ground truth.

The replay does what the node (ros/node.py) does with the same parameters (settings.SPECS), with
bag time as its clock: it reads the topics the node would subscribe to (relative names resolved
in `namespace`, then `remap`), feeds /tf and /tf_static into a TransformTree, groups images and
depth with the node's CaptureSync (polled with the bag time after every message), builds Frames
with ingest.FrameBuilder, and runs Pipeline.process on every capture in stamp order; so the same
inputs give the same keyframes and windows. A capture whose transforms are not there yet waits in
a queue (at most PENDING_MAX) retried after every message, and is dropped once it waited
`tf_timeout` of bag time. Messages recorded at the same time are taken TF first, then CameraInfo,
then the rest (a bag does not order them). At the end of the bag the waits for depth end and the
captures still waiting for TF get one last try.

Outputs in `out_dir` (outputs.py has the formats):
  map.ply                         the voxel map (binary PLY: x y z, rgb, confidence)
  map.png                         top-down picture of the map with the camera path
  depth/<camera>/<stamp_ns>.png   per keyframe and camera: z-depth, 16-bit millimetres, 0 = none
  preview/<camera>/<stamp_ns>.png the camera image beside its coloured depth
  raw/<camera>/<stamp_ns>.png     with raw_depth: the network's own depth for the same keyframes,
                                  before anything the package does to it (bilinear, no edge cut,
                                  no alignment, no measured depth), as depth/: for evaluation
  poses/<camera>.txt              refined world_from_camera per keyframe (TUM format)
  summary.json                    counts, timings, memory, parameters, the files above
  bag/                            with write_bag: the node's output topics (+ the input TF)
<camera> is the camera's frame id ('/' -> '_'). A keyframe's depth and pose are those of the
window in which it is the newest capture (what the node publishes for it).
"""

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from . import decode, layout, outputs, settings
from .geometry import pose_from_quat_trans, se3_compose, se3_inverse
from .geometry.tf_tree import TransformError, TransformTree
from .ingest import LIDAR_SOURCE, CameraImage, Cloud, FrameBuilder, PendingCaptures, image_decoder
from .mapping import reconstruct
from .pipeline import Pipeline
from .progress import Progress

SEC = 1_000_000_000
PENDING_MAX = 10  # captures waiting for TF, as the node
TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
_ORDER = {"tf_static": 0, "tf": 1, "info": 2}  # within one record time; everything else after
PROBLEMS_KEPT = 20


def resolve(topic, namespace=""):
    """Absolute name of a topic as a node in `namespace` resolves it (relative names get the namespace)."""
    if topic.startswith("/"):
        return topic
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{topic}"


def bag_cameras(connections, namespace="", compressed=False):
    """Camera namespaces of a bag (relative to `namespace`): image topics with a camera_info beside them."""
    topics = {c.topic for c in connections}
    suffix = layout.camera_topics("", compressed)[0]
    prefix = resolve("", namespace).rstrip("/") + "/"
    found = []
    for topic in sorted(topics):
        if topic.endswith(suffix) and topic.startswith(prefix):
            cam = topic[len(prefix):-len(suffix)]
            if cam and resolve(layout.camera_topics(cam)[1], namespace) in topics:
                found.append(cam)
    return found


def input_topics(values, namespace="", remap=None):
    """{bag topic: (kind, camera namespace or None)} the node subscribes to with parameters `values`.
    kind: image, compressed, info, depth, lidar, tf, tf_static. remap: {resolved name: bag topic}."""
    remap = remap or {}
    compressed = values["image_transport"] == "compressed"
    wanted = {}
    for cam in values["cameras"]:
        image, info = layout.camera_topics(cam, compressed)
        wanted[resolve(image, namespace)] = ("compressed" if compressed else "image", cam)
        wanted[resolve(info, namespace)] = ("info", cam)
        if values["depth_source"] == "depth_image":
            wanted[resolve(layout.depth_image_topic(cam, values["depth_image_topic"]), namespace)] = ("depth", cam)
    if values["depth_source"] == "lidar":
        wanted[resolve(values["lidar_topic"], namespace)] = ("lidar", None)
    wanted[TF_TOPIC], wanted[TF_STATIC_TOPIC] = ("tf", None), ("tf_static", None)
    return {remap.get(topic, topic): kind for topic, kind in wanted.items()}


def camera_dir(frame_id):
    """Directory name of a camera frame id."""
    return frame_id.strip("/").replace("/", "_") or "camera"


def peak_rss_mb():
    """Peak resident memory of this process so far, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


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


class _Replay:
    """The state of one replay (see the module doc)."""

    def __init__(self, values, backend, out_dir, bag_writer, raw_depth=False):
        self.p = values
        self.raw_depth = raw_depth
        self.out = out_dir
        self.tree = TransformTree()
        self.sync = settings.make_sync(values)
        self.builder = FrameBuilder(values, self.tree.lookup)
        self.pipeline = Pipeline(settings.pipeline_config(values), backend)
        self.pipeline.on_error(lambda seq, err: self.problem(f"window {seq} failed: {err}"))
        self.bag = bag_writer
        self.infos = {}  # camera -> (CameraModel, CameraInfo message) or None after an invalid one
        self.sent = {}  # (frame_id, capture stamp) -> (camera, image stamp)
        self.drops = dict.fromkeys(("tf_timeout", "queue", "bad_input", "no_camera_info"), 0)
        self.pending = PendingCaptures(PENDING_MAX, self.drops)  # waiting for TF, bag time
        self.problems = {}  # message -> count
        self.images = {}  # camera -> images read
        self.frames = 0
        self.keyframes = {}  # frame_id -> [(image stamp, world_from_camera)]
        self.last_preview = None
        self.frame_id = values["world_frame"]
        self.seq = 0
        self.clock = dict.fromkeys(("read", "frames", "pipeline", "outputs"), 0.0)
        self.next_map_ns = None
        self.map_since_ns = None  # stamp of the window after which the map was last cleared

    def problem(self, message, bad_input=True):
        self.drops["bad_input"] += bad_input
        self.problems[message] = self.problems.get(message, 0) + 1

    # ---------------------------------------------------------------- inputs

    def message(self, kind, cam, topic, msg, now):
        """Handle one decoded bag message of `kind` recorded at bag time `now` (int ns)."""
        if kind in ("tf", "tf_static"):
            for tf in msg.transforms:
                r, t = tf.transform.rotation, tf.transform.translation
                pose = pose_from_quat_trans([r.x, r.y, r.z, r.w], [t.x, t.y, t.z])
                try:
                    self.tree.set_transform(tf.header.frame_id, tf.child_frame_id, decode.stamp_ns(tf.header), pose,
                                            static=kind == "tf_static")
                except ValueError as err:
                    self.problem(f"{topic}: {err}")
            return []
        if kind == "info":
            try:
                self.infos[cam] = (decode.camera_info_to_model(msg), msg)
            except ValueError as err:
                self.infos[cam] = None
                self.problem(f"{topic}: invalid calibration: {err}")
            return []
        if kind in ("image", "compressed"):
            self.images[cam] = self.images.get(cam, 0) + 1
            info = self.infos.get(cam)
            if info is None:
                self.drops["no_camera_info"] += 1
                return []
            if not msg.header.frame_id:
                self.problem(f"{topic}: image without header.frame_id (needed for TF)")
                return []
            try:
                image = image_decoder(msg, info[0], topic)
            except ValueError as err:
                self.problem(str(err))
                return []
            stamp = decode.stamp_ns(msg.header)
            return self.sync.add_image(cam, stamp, CameraImage(image, info[0], msg.header.frame_id, stamp))
        if kind == "lidar":
            try:
                points, times = decode.cloud_to_xyz(msg)
            except ValueError as err:
                self.problem(f"{topic}: {err}")
                return []
            if not len(points):
                self.problem(f"{topic}: empty or all-NaN cloud ignored")
                return []
            stamp = decode.stamp_ns(msg.header)
            cloud, problem = Cloud.checked(points, times, msg.header.frame_id, stamp)
            if problem:
                self.problem(f"{topic}: {problem}", bad_input=False)
            return self.sync.add_depth(LIDAR_SOURCE, stamp, cloud, cloud.span)
        try:
            depth = decode.depth_image_to_meters(msg)
        except ValueError as err:
            self.problem(f"{topic}: {err}")
            return []
        return self.sync.add_depth(cam, decode.stamp_ns(msg.header), depth)

    def build(self, cap):
        """builder.frames, timed."""
        clock = time.perf_counter()
        try:
            return self.builder.frames(cap)
        finally:
            self.clock["frames"] += time.perf_counter() - clock

    def tf_timeout(self, cap, err):
        self.problem(f"capture dropped: no transform within tf_timeout ({self.p['tf_timeout']} s): {err}",
                     bad_input=False)

    def feed(self, captures, now, final=False):
        """Queue captures and run every one whose transforms are there (node._feed with bag time)."""
        for reason in self.sync.take_resets():
            self.problem(f"input time jumped back: {reason}", bad_input=False)
            self.pending.clear()
        self.pending.push(captures, now)
        for cap, (frames, problems) in self.pending.drain(self.build, now, self.p["tf_timeout"] * SEC,
                                                          self.tf_timeout, final):
            for message in problems:
                self.problem(message)
            for (cam, (stamp, img)), frame in zip(cap.images.items(), frames):
                self.sent[frame.key] = (cam, stamp)
            if frames:
                self.frames += len(frames)
                clock = time.perf_counter()
                _, result = self.pipeline.process(frames)
                self.clock["pipeline"] += time.perf_counter() - clock
                if result is not None:
                    clock = time.perf_counter()
                    self.result(result, now)
                    self.clock["outputs"] += time.perf_counter() - clock

    # ---------------------------------------------------------------- outputs

    def result(self, result, now):
        """Write what the node publishes for a window (node._on_result)."""
        p = self.p
        recon = result.reconstruction
        frame_id = p["world_frame"] if recon.pose_frame == "world" else p["map_frame"]
        self.frame_id = frame_id
        newest = recon.views  # the newest capture's views, reconstructed at native resolution
        newest_stamp = newest[0].frame.stamp_ns
        self.seq += 1
        if result.map_reset is not None:
            self.map_since_ns = min(f.stamp_ns for f in recon.frames)
        raw = None
        if self.raw_depth:
            raw = reconstruct(recon.batch, recon.prediction, views=recon.selected, edge_threshold=None,
                              device="numpy").views
        for k, v in enumerate(newest):
            cam, stamp = self.sent.get(v.frame.key, (v.frame.frame_id, v.frame.stamp_ns))
            name = camera_dir(v.frame.frame_id)
            if raw is not None:
                (self.out / "raw" / name).mkdir(parents=True, exist_ok=True)
                outputs.write_depth_png(self.out / "raw" / name / f"{stamp}.png", raw[k].depth)
            for sub in ("depth", "preview"):
                (self.out / sub / name).mkdir(parents=True, exist_ok=True)
            outputs.write_depth_png(self.out / "depth" / name / f"{stamp}.png", v.depth)
            self.last_preview = self.out / "preview" / name / f"{stamp}.png"
            outputs.write_png(self.last_preview, outputs.depth_preview(v.frame.image, v.depth))
            self.keyframes.setdefault(v.frame.frame_id, []).append((stamp, v.world_from_camera))
            if self.bag is not None:
                out = f"/{p['node_name']}/{cam.strip('/')}"
                self.bag.write(f"{out}/depth", self.bag.float_image(
                    np.where(np.isfinite(v.depth) & (v.depth > 0), v.depth, np.nan), v.frame.frame_id, stamp), now)
                self.bag.write(f"{out}/confidence", self.bag.float_image(v.confidence, v.frame.frame_id, stamp), now)
                info = self.infos.get(cam)
                if info is not None:
                    self.bag.write(f"{out}/camera_info", self.bag.camera_info(info[1], v.frame.frame_id, stamp), now)
        if self.bag is None:
            return
        node = p["node_name"]
        scope = None if p["points_scope"] == "newest" else range(len(recon.frames))
        self.bag.write(f"/{node}/points", self.bag.cloud(*recon.cloud(scope), frame_id, newest_stamp), now)
        if self.bag.has_window:
            cfg = self.pipeline.config.batch
            used = [("ray_directions_cam" in passed, "camera_pose_quats" in passed, "depth_along_ray" in passed)
                    for passed in recon.batch.passed]
            self.bag.write(f"/{node}/window", self.bag.window(
                frame_id, newest_stamp, self.seq, [(f.stamp_ns, f.frame_id, pose)
                                                   for f, pose in zip(recon.frames, recon.poses)], used,
                recon.metric_scale, cfg.metric_poses and cfg.metric_depth, p["backend"],
                result.timings.get("inference", 0.0)), now)
        transforms = self.tf_output(recon, newest, frame_id, newest_stamp)
        if transforms:
            self.bag.write(TF_TOPIC, self.bag.tf(transforms), now)

    def tf_output(self, recon, newest, frame_id, stamp):
        """The transforms the node publishes for a window (node._publish_tf)."""
        p = self.p
        if p["tf_output"] == "map_odom":
            ref = recon.frames[0]
            cam_stamp = self.sent.get(ref.key, (None, ref.stamp_ns))[1]
            try:
                tf_pose = self.tree.lookup(p["world_frame"], ref.frame_id, cam_stamp)
            except TransformError:
                return []
            correction = se3_compose(recon.poses[0], se3_inverse(tf_pose))
            return [(correction, p["map_frame"], p["world_frame"], stamp)]
        if p["tf_output"] == "camera_refined":
            return [(v.world_from_camera, frame_id, f"{v.frame.frame_id}_refined", stamp) for v in newest]
        return []

    def publish_map(self, now, force=False):
        """Record ~/map at map_publish_rate of bag time (and once at the end)."""
        rate = self.p["map_publish_rate"]
        if self.bag is None or (not force and (rate <= 0 or (self.next_map_ns is not None and now < self.next_map_ns))):
            return
        self.next_map_ns = now + int(SEC / rate) if rate > 0 else None
        xyz, rgb, conf = self.pipeline.map_points()
        self.bag.write(f"/{self.p['node_name']}/map", self.bag.cloud(xyz, rgb, conf, self.frame_id, now), now,
                       transient_local=True)


def replay(bag_path, params=None, out_dir="out/replay", backend=None, progress=True, write_bag=False,
           namespace="", remap=None, node_name="mapanything", raw_depth=False):
    """Replay a rosbag2 through the pipeline and write the outputs (module doc); returns the summary dict.

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
    values = {**settings.defaults(), **(params or {})}
    out.mkdir(parents=True, exist_ok=True)
    with AnyReader([bag_path], default_typestore=get_typestore(TYPESTORE)) as reader:
        if values["cameras"] is None:
            values["cameras"] = bag_cameras(reader.connections, namespace,
                                            values["image_transport"] == "compressed")
        found = settings.problems(values)
        if found:
            raise ValueError("bad parameters: " + "; ".join(found))
        runtime, made = None, backend is None
        if made:
            backend, runtime = make_backend(values)
        kinds = input_topics(values, namespace, remap)
        missing = sorted(t for t, (k, _) in kinds.items() if k not in ("tf", "tf_static", "depth") and
                         t not in {c.topic for c in reader.connections})
        conns = [c for c in reader.connections if c.topic in kinds]
        storage = "sqlite3" if any(bag_path.glob("*.db3")) or bag_path.suffix == ".db3" else "mcap"
        writer = outputs.OutputBag(out / "bag", storage) if write_bag else None
        state = _Replay({**values, "node_name": node_name}, backend, out, writer, raw_depth)
        total = sum(c.msgcount for c in conns if kinds[c.topic][0] in ("image", "compressed"))
        bar = None if progress is False else Progress("replay", "frames", enabled=None if progress is True else True)
        counts, done, now, first = {}, 0, 0, None
        try:
            clock = time.perf_counter()
            for conn, now, raw in _ordered(reader.messages(connections=conns), kinds):
                first = now if first is None else first
                kind, cam = kinds[conn.topic]
                counts[conn.topic] = counts.get(conn.topic, 0) + 1
                msg = reader.deserialize(raw, conn.msgtype)
                if writer is not None and kind in ("tf", "tf_static"):
                    writer.write_raw(conn.topic, conn.msgtype, raw, now, transient_local=kind == "tf_static")
                captures = state.message(kind, cam, conn.topic, msg, now)
                state.clock["read"] += time.perf_counter() - clock
                state.feed(captures + state.sync.poll(now), now)
                state.publish_map(now)
                if kind in ("image", "compressed"):
                    done += 1
                    if bar is not None:
                        bar.update(done, total)
                clock = time.perf_counter()
            end = now + int(settings.DEPTH_WAIT_S * SEC) + 1
            state.feed(state.sync.poll(end), end, final=True)
            state.pipeline.flush_map()  # map_insert "oldest": the keyframes still in the window
            state.publish_map(now, force=True)
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
    clock = time.perf_counter()
    summary = _finish(state, values, bag_path, out, counts, first, now, missing, writer, backend, made, runtime)
    state.clock["outputs"] += time.perf_counter() - clock
    wall = time.perf_counter() - started
    summary["timings"] = {"wall_s": wall, **{f"{k}_s": v for k, v in state.clock.items()},
                          "frames_per_s": state.frames / wall if wall > 0 else 0.0,
                          "window_latency_s": state.pipeline.stats().latency}
    summary["memory"] = {"peak_rss_mb": peak_rss_mb()}
    outputs.write_json(out / "summary.json", summary)
    return summary


def _finish(state, values, bag_path, out, counts, first, last, missing, writer, backend, made, runtime):
    """Write the map, its picture and the trajectories; the summary without timings and memory."""
    n = state.pipeline.save_map(out / "map.ply")
    xyz, rgb, _ = state.pipeline.map_points()
    poses = np.array([pose for frames in state.keyframes.values() for _, pose in frames]).reshape(-1, 4, 4)
    up = (0.0, 0.0, 1.0) if state.frame_id == values["world_frame"] or not len(poses) else outputs.up_vector(poses)
    path = []
    if state.keyframes:
        path = np.array([pose[:3, 3] for _, pose in next(iter(state.keyframes.values()))])
    outputs.write_png(out / "map.png", outputs.render_map(xyz, rgb, path, up, pixel=values["map_voxel_size"]))
    (out / "poses").mkdir(exist_ok=True)
    cameras = {}
    for frame_id, frames in state.keyframes.items():
        name = camera_dir(frame_id)
        lines = [f"# refined world_from_camera of {frame_id} in frame {state.frame_id}: stamp tx ty tz qx qy qz qw"]
        lines += [outputs.tum_line(stamp, pose) for stamp, pose in frames]
        (out / "poses" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        cam = state.sent.get((frame_id, frames[0][0]), (None,))[0]
        cameras[frame_id] = {"namespace": cam, "keyframes": len(frames), "depth": f"depth/{name}",
                             "preview": f"preview/{name}", "trajectory": f"poses/{name}.txt",
                             "raw_depth": f"raw/{name}" if state.raw_depth else None}
    stats = state.pipeline.stats()
    sync = state.sync.stats()
    return {
        "bag": str(bag_path),
        "backend": values["backend"] if made else type(backend).__name__,
        "device": runtime.describe() if runtime is not None else None,
        "parameters": values,
        "missing_topics": missing,
        "messages": counts,
        "bag_duration_s": (last - first) / SEC if first is not None else 0.0,
        "images": state.images,
        "frames": state.frames,
        "captures": stats.captures,
        "keyframes": stats.keyframes,
        "windows": stats.done,
        "windows_failed": stats.failed,
        "window_resets": stats.window_resets,
        "map_resets": stats.map_resets,
        "dropped": {**state.drops, **{f"sync_{k}": v for k, v in sync["dropped"].items()}},
        "problems": dict(list(state.problems.items())[:PROBLEMS_KEPT]),
        "pose_frame": state.frame_id,
        "map_since_ns": state.map_since_ns,
        "cameras": cameras,
        "map": {"points": n, "voxel_size": values["map_voxel_size"]},
        "outputs": {"map": "map.ply", "map_picture": "map.png", "summary": "summary.json",
                    "last_preview": str(state.last_preview.relative_to(out)) if state.last_preview else None,
                    "bag": "bag" if writer is not None else None,
                    "bag_topics": writer.counts if writer is not None else None,
                    "window_topic": None if writer is None else writer.has_window},
    }


def evaluate(out_dir, bag_path, threshold=0.05, with_map=True):
    """Compare a replay's outputs (out_dir) with the ground truth of a synthetic bag.

    depth: evaluation.depth_metrics over every written keyframe depth with a true depth at the same
    camera and stamp (16-bit PNG values, so within 0.5 mm of what was computed); raw_depth: the same
    for the network's own depth when the replay wrote it (replay's raw_depth), else None; ate: of
    the refined keyframe positions of all cameras, without alignment when the poses are in the
    world frame, else Sim(3)-aligned (image-only: the chain's frame has no relation to the world),
    its "length" the longest camera's true path between its keyframes; map: evaluation.map_metrics
    of map.ply at `threshold` metres (None when not with_map), carried, when the trajectory was
    aligned, by a Sim(3) fitted on the keyframes of the map's own segment (those since it was last
    cleared), or None with "map_skipped" saying why when those cannot fix one (fit_similarity's
    rule: at least 3, not on a line). Returns the metrics dict and writes it to out_dir/eval.json.
    """
    from .evaluation import ate, depth_metrics, map_metrics, read_ground_truth
    from .geometry.transforms import transform_points
    from .geometry.similarity import fit_similarity
    from .mapping.ply import read_ply

    out = Path(out_dir)
    summary = json.loads((out / "summary.json").read_text())
    gt = read_ground_truth(Path(bag_path))
    if not gt.depth and not gt.poses:
        raise ValueError(f"{bag_path}: no ground truth topics ({layout.TRUTH_PREFIX}/...)")
    pred, raw, true, est, ref, stamps_all, lengths, unmatched = [], [], [], [], [], [], [0.0], 0
    for frame_id, cam in summary["cameras"].items():
        truth = gt.depth.get(frame_id, {})
        for path in sorted((out / cam["depth"]).glob("*.png")):
            t = truth.get(int(path.stem))
            if t is None:
                unmatched += 1
                continue
            pred.append(outputs.read_depth_png(path).ravel())
            true.append(t.ravel())
            if cam.get("raw_depth"):
                raw.append(outputs.read_depth_png(out / cam["raw_depth"] / path.name).ravel())
        stamps, poses = outputs.read_tum(out / cam["trajectory"])
        path = []
        for stamp, pose in zip(stamps, poses):
            t = gt.poses.get(frame_id, {}).get(int(stamp))
            if t is not None:
                est.append(pose[:3, 3])
                ref.append(t[:3, 3])
                stamps_all.append(int(stamp))
                path.append(t[:3, 3])
        if len(path) > 1:
            lengths.append(float(np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1))))
    world = summary["pose_frame"] == summary["parameters"]["world_frame"]
    align = "none" if world else "sim3"
    result = {"bag": str(bag_path), "keyframe_depths": len(pred), "unmatched_depths": unmatched,
              "depth": depth_metrics(np.concatenate(pred), np.concatenate(true)) if pred else None,
              "raw_depth": depth_metrics(np.concatenate(raw), np.concatenate(true)) if raw else None,
              "poses": len(est),
              "ate": dict(ate(np.array(est), np.array(ref), align=align), align=align, length=max(lengths))
              if est else None, "map": None}
    if not (with_map and len(gt.surface)):
        return _written(out, result)
    points, _, _ = read_ply(out / summary["outputs"]["map"])
    if align == "sim3":
        since = summary.get("map_since_ns") or 0
        mine = np.array([s >= since for s in stamps_all], bool)
        try:
            world_from_map = fit_similarity(np.array(est).reshape(-1, 3)[mine], np.array(ref).reshape(-1, 3)[mine])
        except ValueError as err:  # fewer than 3 positions, or on a line
            result["map_skipped"] = f"the map's segment does not fix a similarity to the world: {err}"
            return _written(out, result)
        points = transform_points(world_from_map, points)
    result["map"] = map_metrics(points, gt.surface, threshold)
    return _written(out, result)


def _written(out, result):
    """result, written to out/eval.json."""
    outputs.write_json(out / "eval.json", result)
    return result
