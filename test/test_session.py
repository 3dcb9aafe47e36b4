"""The session (ROS-free): stamps of the outputs, one parameter snapshot per window under random
run-time changes, publishing bugs that never stop the map, repeated frame ids, safe map saving.

Messages are rosbags objects (bag.synthetic.Messages), as the replay hands them over.
"""

import os
import random
import threading
import time

import numpy as np
import pytest
from rosbags.typesys import get_typestore

from mapanything_ros import mapping, pipeline as pipeline_module, settings
from mapanything_ros.backends import OracleBackend
from mapanything_ros.bag.synthetic import TYPESTORE, Messages
from mapanything_ros.geometry.tf_tree import TransformTree
from mapanything_ros.session import Reporter, Session
from mapanything_ros.session import session as session_module
from mapanything_ros.session.config import pipeline_config
from mapanything_ros.session.report import BURST, THROTTLE_S
from mapanything_ros.window import batch as batch_module

MS = 1_000_000
SEC = 1000 * MS
START = 100 * SEC
MSGS = Messages(get_typestore(TYPESTORE))


class Feed:
    """A session on the small synthetic scene; `capture(k)` hands it the k-th capture's messages."""

    def __init__(self, scene, offsets_ms=(0, 0), threaded=False, frame_ids=None, emit=None, **params):
        self.scene = scene
        self.names = [c.name for c in scene.cameras][:len(offsets_ms)]
        self.frame_ids = frame_ids or self.names
        self.offsets = [o * MS for o in offsets_ms]
        self.tree = TransformTree(max_history_s=1000)
        self.outputs, self.reports = [], []
        values = {**settings.defaults(), "cameras": list(self.names), "backend": "oracle", "oracle_preset": "small",
                  "long_side": 112, "keyframe_interval": 0.05, "tf_output": "camera_refined", **params}
        self.session = Session(values, OracleBackend(scene), self.tree.lookup,
                               Reporter(lambda *report: self.reports.append(report)),
                               emit or self.outputs.append, threaded=threaded)

    def capture(self, k):
        base = START + k * 100 * MS
        for name, frame_id, offset in zip(self.names, self.frame_ids, self.offsets):
            stamp = base + offset
            self.tree.set_transform("odom", frame_id, stamp, self.scene.world_from_camera(name, stamp))
            view = self.scene.render(name, stamp)
            self.session.camera_info(name, MSGS.camera_info(view.camera, MSGS.header(frame_id, stamp)))
            self.session.image(name, MSGS.image(view.image, "rgb8", MSGS.header(frame_id, stamp)), stamp)
        self.session.tick(base + max(self.offsets))


@pytest.fixture(scope="module")
def scene():
    from mapanything_ros.synthetic.presets import make_scene

    return make_scene("small", 0)


def test_each_output_carries_the_stamp_of_what_it_shows(scene):
    feed = Feed(scene, offsets_ms=(0, 10))  # the second camera 10 ms after the first
    for k in range(4):
        feed.capture(k)
    feed.session.finish(START + SEC)
    assert len(feed.outputs) == 4
    for k, out in enumerate(feed.outputs):
        first, second = START + k * 100 * MS, START + k * 100 * MS + 10 * MS
        assert [(c.frame_id, c.stamp_ns) for c in out.cameras] == list(zip(feed.names, (first, second)))
        assert out.stamp_ns == first  # the reference view: the first camera of the newest capture
        assert [t[3] for t in out.transforms] == [first, second]  # camera_refined: each camera's image stamp
        views = out.views()
        assert [v[0] for v in views[:2]] == [first, second]
        frames = out.reconstruction.frames
        assert {f.capture_ns for f in frames[:2]} == {first + 5 * MS}  # the capture: the midpoint
        for cam in out.cameras:  # each view at its own instant: its pose and depth are the truth at its stamp
            view = out.view(cam)
            np.testing.assert_allclose(view.world_from_camera, scene.world_from_camera(cam.frame_id, cam.stamp_ns),
                                       atol=1e-9)
            truth = scene.render(cam.frame_id, cam.stamp_ns).depth_z
            ok = np.isfinite(view.depth) & (view.depth > 0)
            assert ok.mean() > 0.8 and np.median(np.abs(view.depth[ok] - truth[ok]) / truth[ok]) < 1e-3
    snap, frame_id, stamp = feed.session.map(0)
    assert frame_id == "odom" and snap.stamp_ns == stamp == feed.outputs[-1].stamp_ns


def test_map_odom_at_the_reference_stamp(scene):
    feed = Feed(scene, offsets_ms=(0, 10), tf_output="map_odom")
    feed.capture(0)
    feed.capture(1)
    (correction, parent, child, stamp), = feed.outputs[0].transforms
    assert (parent, child, stamp) == ("map", "odom", START)
    np.testing.assert_allclose(correction, np.eye(4), atol=1e-9)  # poses given: identity by construction


RUNTIME = {n: s for n, s in settings.SPECS.items() if not s.read_only and n != "save_map_path"}


def random_values(rng, values):
    """Every run-time parameter drawn at random within its spec (cheap magnitudes)."""
    drawn = dict(values)
    for name, spec in RUNTIME.items():
        if spec.choices:
            drawn[name] = rng.choice(spec.choices)
        elif isinstance(spec.default, bool):
            drawn[name] = rng.random() < 0.5
        else:
            low = spec.low + (1e-3 if spec.low_open else 0.0)
            drawn[name] = round(rng.uniform(low, min(spec.high, low + 3 * max(spec.default, 0.05))), 4)
    drawn["map_confidence_quantile"] = rng.choice([0.0, 0.1, 0.5])
    drawn["sync_slop"] = max(drawn["sync_slop"], 0.01)
    drawn["tf_timeout"] = max(drawn["tf_timeout"], 0.5)
    drawn["camera_timeout"] = max(drawn["camera_timeout"], 1.0)
    return drawn


def test_every_window_is_made_with_one_snapshot_while_parameters_change(scene, monkeypatch):
    """A thread sets every run-time parameter at random while another feeds captures and the worker
    makes windows; each window's steps (assembly, reconstruction) and its outputs use the snapshot
    in force when its keyframe was admitted."""
    used = {}  # worker thread: what each step of the job running was given
    assemble, reconstruct = batch_module.assemble, mapping.reconstruct

    def assemble_spy(frames, config, *args, **kwargs):
        used["batch"] = config
        return assemble(frames, config, *args, **kwargs)

    def reconstruct_spy(*args, **kwargs):
        used["reconstruct"] = kwargs
        return reconstruct(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "assemble", assemble_spy)
    monkeypatch.setattr(pipeline_module, "reconstruct", reconstruct_spy)
    checked, problems = [], []

    def emit(out):
        cfg = out.result.config
        if cfg != pipeline_config(out.values):
            problems.append(f"window {out.sequence}: its config is not its parameter snapshot's")
        if used["batch"] != cfg.batch:
            problems.append(f"window {out.sequence}: assembled with another batch config")
        kw = used["reconstruct"]
        if (kw["edge_threshold"], kw["edge_noise_sigmas"], kw["keep_measured"], kw["align_to_measured"],
                kw["completion"]) != (cfg.edge_threshold, cfg.edge_noise_sigmas, cfg.keep_measured,
                                      cfg.align_to_measured, cfg.completion):
            problems.append(f"window {out.sequence}: reconstructed with other settings")
        expected = {"none": 0, "map_odom": 1, "camera_refined": len(out.cameras)}[out.values["tf_output"]]
        if len(out.transforms) != expected:
            problems.append(f"window {out.sequence}: TF outputs of another tf_output")
        scope = len(out.points()[0])
        if out.values["points_scope"] == "newest" and scope > sum(len(out.view(c).depth.ravel()) for c in out.cameras):
            problems.append(f"window {out.sequence}: points of another points_scope")
        checked.append(out.sequence)

    feed = Feed(scene, threaded=True, emit=emit)
    feed.session.start()
    stop = threading.Event()
    rng = random.Random(0)
    changes = [0]

    def change():
        while not stop.is_set():
            feed.session.configure(random_values(rng, feed.session.values))
            changes[0] += 1
            time.sleep(0.002)

    changer = threading.Thread(target=change)
    changer.start()
    try:
        for k in range(60):
            feed.capture(k)
            time.sleep(0.01)
        assert feed.session.pipeline.drain(60)
    finally:
        stop.set()
        changer.join()
        feed.session.stop(10)
    stats = feed.session.pipeline.stats()
    assert problems == [] and stats.failed == 0 and stats.publish_failed == 0
    assert len(checked) == stats.done >= 10 and changes[0] > 50


def test_a_publishing_bug_is_reported_once_with_its_traceback_and_the_map_grows(scene):
    def broken(out):
        raise KeyError("a bug in the outputs")

    feed = Feed(scene, emit=broken)
    for k in range(5):
        feed.capture(k)
    stats = feed.session.pipeline.stats()
    assert stats.publish_failed == 5 and stats.done == 5 and stats.failed == 0
    assert stats.map_keyframes == 10 and len(feed.session.pipeline.map) > 1000
    errors = [r for r in feed.reports if r[1] == "publish"]
    assert len(errors) == 5 and all(r[2] == 2 for r in errors)  # ERROR, each time on the diagnostics
    logged = [r for r in errors if r[4]]
    assert "KeyError" in logged[0][3] and all("\n" not in r[3] for r in errors)  # one line for the diagnostics
    tracebacks = [r[5] for r in logged if len(r) > 5 and r[5]]
    assert len(tracebacks) == 1 and "Traceback" in tracebacks[0] and "a bug in the outputs" in tracebacks[0]


class Diverged:
    """The oracle with its predictions broken as a diverged network or bad weights break them."""

    def __init__(self, scene, mode):
        self.oracle, self.mode = OracleBackend(scene), mode

    def predict(self, batch):
        from dataclasses import replace

        out = self.oracle.predict(batch)
        poses, depth = out.ref_from_camera.copy(), np.array(out.depth_along_ray)
        conf, rays = np.array(out.confidence), np.array(out.ray_directions)
        if self.mode == "nan_translation":
            poses[-1, 0, 3] = np.nan
        elif self.mode == "far_translation":
            poses[-1, :3, 3] = 1e30
        elif self.mode == "huge_depth":
            depth[:] = 1e30
        elif self.mode == "nan_depth":
            depth[:] = np.nan
        elif self.mode == "some_bad_pixels":  # rows: NaN confidence, infinite ray (x or z) or depth; a quarter good
            conf[:, ::4], rays[:, 1::8, :, 0], rays[:, 5::8, :, 2], depth[:, 2::4] = np.nan, np.inf, np.inf, np.inf
        scale = {"nan_scale": np.nan, "zero_scale": 0.0}.get(self.mode, out.metric_scale)
        return replace(out, ref_from_camera=poses, depth_along_ray=depth, confidence=conf, ray_directions=rays,
                       metric_scale=scale)


@pytest.mark.parametrize("mode", ["nan_translation", "far_translation", "nan_scale", "zero_scale"])
def test_a_diverged_networks_poses_fail_the_window_and_publish_nothing(scene, mode):
    """NaN or absurd poses or scale from the network (bad weights): each window fails, said with the
    reason; nothing is published and nothing enters the map (NaN went out on /tf and ~/points)."""
    feed = Feed(scene)
    feed.session.pipeline.backend = Diverged(scene, mode)
    for k in range(3):
        feed.capture(k)
    stats = feed.session.pipeline.stats()
    assert feed.outputs == [] and stats.failed == 3 and len(feed.session.pipeline.map) == 0
    failed = [r for r in feed.reports if r[1] == "window"]
    assert failed and failed[0][2] == 2 and "the network" in failed[0][3], feed.reports
    assert ("not finite" if mode == "nan_translation" else "garbage" if mode == "far_translation" else
            "metric scale is") in failed[0][3]


@pytest.mark.parametrize("mode", ["huge_depth", "nan_depth", "some_bad_pixels"])
def test_a_diverged_networks_depth_is_no_estimate(scene, mode):
    """Depth, rays or confidence a network cannot mean (inf, NaN, 1e30 m) are pixels without an
    estimate: outputs finite (1e30 m points went out, and NaN confidences), said when a view is left
    with none (empty outputs every window went unsaid)."""
    feed = Feed(scene)
    feed.session.pipeline.backend = Diverged(scene, mode)
    for k in range(2):
        feed.capture(k)
    assert len(feed.outputs) == 2
    for out in feed.outputs:
        points, _, confidence = out.points()
        assert np.isfinite(points).all() and np.isfinite(confidence).all()
        assert np.abs(points).max(initial=0) < 100
        for cam in out.cameras:
            depth = out.view(cam).depth
            assert not (depth[np.isfinite(depth)] > 100).any()
        assert (len(points) > 0) == (mode == "some_bad_pixels")
    said = [r for r in feed.reports if r[1] == "no_estimate"]
    assert bool(said) == (mode != "some_bad_pixels")
    if said:
        assert said[0][2] == 1 and "no usable depth for " + feed.names[0] in said[0][3]


def test_cameras_repeating_a_frame_id_are_dropped_and_named(scene):
    feed = Feed(scene, frame_ids=["camera", "camera"])
    for k in range(3):
        feed.capture(k)
    assert feed.outputs == [] and feed.session.drops["frame_id"] == 3
    message = next(r[3] for r in feed.reports if r[1] == "frame_id")
    assert "'camera'" in message and all(n in message for n in feed.names)


def test_images_without_camera_info_are_counted_once(scene):
    """Counted in no_camera_info and again in bad_input once said (a hostile tester: 24 images, 38 drops)."""
    feed = Feed(scene)
    view = scene.render(feed.names[0], START)
    n = session_module.NO_INFO_GRACE + 4
    for k in range(n):
        feed.session.image(feed.names[0], MSGS.image(view.image, "rgb8", MSGS.header(feed.names[0], START + k * MS)),
                           START + k * MS)
    said = [r for r in feed.reports if r[1] == "image_without_info"]
    assert feed.session.drops["no_camera_info"] == n and feed.session.drops["bad_input"] == 0 and len(said) == 4


def test_the_backlog_a_silent_camera_releases_is_not_taken_for_late_tf(scene):
    """silent_camera drop: the peers' images queued while it was waited for go out at once, TF long there;
    they overflowed the TF wait queue, said as "TF arrives late" (a hostile tester's finding)."""
    feed = Feed(scene, silent_camera="drop", camera_timeout=1.5)
    name, other = feed.names
    for k in range(25):  # 2.5 s of the first camera alone (the other went silent)
        stamp = START + k * 100 * MS
        feed.tree.set_transform("odom", name, stamp, scene.world_from_camera(name, stamp))
        view = scene.render(name, stamp)
        feed.session.camera_info(name, MSGS.camera_info(view.camera, MSGS.header(name, stamp)))
        feed.session.image(name, MSGS.image(view.image, "rgb8", MSGS.header(name, stamp)), stamp)
        feed.session.tick(stamp)
    assert feed.session.drops["queue"] == 0 and not [r for r in feed.reports if r[1] == "queue"], feed.reports
    assert feed.session.stats()["frames"] > session_module.PENDING_MAX


def test_each_image_is_paired_with_the_camera_info_of_its_stamp(scene, monkeypatch):
    """Sent image first, then its CameraInfo (image_transport's CameraPublisher), calibration changing each
    frame: every output carried the previous frame's (a hostile tester's finding)."""
    monkeypatch.setattr(session_module, "INFO_HISTORY", 2)  # the oldest go
    feed = Feed(scene, offsets_ms=(0,), keyframe_interval=0.0)
    name = feed.names[0]
    fx = {}
    for k in range(6):
        stamp = START + k * 100 * MS
        view = scene.render(name, stamp)
        info = MSGS.camera_info(view.camera, MSGS.header(name, stamp))
        fx[stamp] = info.k[0] = info.k[0] * (1 + 0.01 * k)
        if k == 3:  # its own describes another size: the image keeps the one it was checked against
            info.width, info.height, fx[stamp] = 2 * info.width, 2 * info.height, fx[stamp - 100 * MS]
        feed.session.image(name, MSGS.image(view.image, "rgb8", MSGS.header(name, stamp)), stamp)
        feed.session.camera_info(name, info)
        feed.tree.set_transform("odom", name, stamp, scene.world_from_camera(name, stamp))  # TF after the image
        feed.session.tick(stamp)
    views = [v for out in feed.outputs for v in out.cameras]
    # The first image came before any CameraInfo; the fifth after the one of the wrong size (refused).
    assert [(v.stamp_ns - START) // MS for v in views] == [100, 200, 300, 500]
    assert all(v.info.k[0] == fx[v.stamp_ns] for v in views), [(v.info.k[0], fx[v.stamp_ns]) for v in views]
    frames = feed.outputs[-1].result.reconstruction.frames
    assert all(f.camera.k[0] == fx[f.stamp_ns] for f in frames)  # the rays too, not only the message


def test_captures_dropped_while_too_many_wait_for_tf_are_said(scene):
    """A capture waits for TF stamped at or after its images (at most PENDING_MAX of them wait):
    those dropped for want of room are said, and counted."""
    feed = Feed(scene, tf_timeout=60.0)
    feed.tree.set_transform = lambda *args, **kwargs: None  # TF never comes
    for k in range(session_module.PENDING_MAX + 2):
        feed.capture(k)
    said = [r for r in feed.reports if r[1] == "queue"]
    assert feed.session.drops["queue"] == 2 and len(said) == 2 and feed.outputs == []
    assert said[0][0] == "tf" and said[0][2] == 1 and "already waiting for their transforms" in said[0][3]
    assert feed.session.status_values()["tf"]["dropped_queue"] == 2


def test_reporter_throttles_kinds_and_floods_of_unique_messages():
    now = [0.0]
    lines = []
    report = Reporter(lambda *r: lines.append(r), clock=lambda: now[0])
    for i in range(10):
        report("tf", "bad", 1, f"frame ghost_{i:08x}-4e1a-9b2c: invalid")
        report("tf", "other", 1, f"{i} captures late")
    logged = [r for r in lines if r[4]]
    assert len(lines) == 20 and len([r for r in logged if r[1] == "other"]) == 1
    assert len([r for r in logged if r[1] == "bad"]) <= BURST
    now[0] += THROTTLE_S
    report("tf", "other", 1, "11 captures late")
    assert lines[-1][4]


def test_save_map_is_atomic_and_refuses_what_is_not_its_own(scene, tmp_path, monkeypatch):
    feed = Feed(scene)
    with pytest.raises(ValueError, match="empty"):
        feed.session.save_map(tmp_path / "map.npz")
    for k in range(3):
        feed.capture(k)
    n, path = feed.session.save_map(tmp_path / "map.npz")
    good, ply = (tmp_path / "map.npz").read_bytes(), (tmp_path / "map.ply").read_bytes()
    assert n > 1000 and path == str(tmp_path / "map.npz") and good.startswith(b"PK") and ply.startswith(b"ply\n")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "map.npz").stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() makes it
    with pytest.raises(ValueError, match="does not end in .npz"):
        feed.session.save_map(tmp_path / "map.ply")
    text = tmp_path / "notes.npz"
    text.write_text("my notes")
    with pytest.raises(ValueError, match="not a numpy .npz"):
        feed.session.save_map(text)
    with pytest.raises(ValueError, match="not a directory"):
        feed.session.save_map(tmp_path / "new" / "deep" / "map.npz")
    assert text.read_text() == "my notes" and not (tmp_path / "new").exists()

    def full_disk(f, **arrays):
        f.write(b"PK\x03\x04partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space"):
        feed.session.save_map(tmp_path / "map.npz")
    assert (tmp_path / "map.npz").read_bytes() == good  # the saved map is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.mesh.ply", "map.npz", "map.ply", "notes.npz"]  # no temporary left
    monkeypatch.undo()
    # The disk full at the last file (the mesh), the map changed since: none of the three replaced.
    feed.capture(3)
    mesh = (tmp_path / "map.mesh.ply").read_bytes()

    def full_at_mesh(f, *args, **kwargs):
        f.write(b"ply\npartial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(session_module, "write_mesh_ply", full_at_mesh)
    with pytest.raises(OSError, match="No space"):
        feed.session.save_map(tmp_path / "map.npz")
    assert [(tmp_path / name).read_bytes() for name in ("map.npz", "map.ply", "map.mesh.ply")] == [good, ply, mesh]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.mesh.ply", "map.npz", "map.ply", "notes.npz"]
    monkeypatch.undo()
    inside = tmp_path / "maps"
    inside.mkdir()
    assert feed.session.save_map("a.npz", inside)[1] == str(inside / "a.npz")  # relative: in the directory
    for outside in (tmp_path / "b.npz", "../b.npz", inside / ".." / "b.npz"):
        with pytest.raises(ValueError, match="outside"):
            feed.session.save_map(outside, inside)
    (inside / "link.npz").symlink_to(tmp_path / "b.npz")
    with pytest.raises(ValueError, match="outside"):
        feed.session.save_map("link.npz", inside)
    # Beside the volume, a FIFO (opening it to check its kind waited for a writer for ever, and the
    # map thread with it) and a name too long for the mesh's file alone (its rename failed after
    # the PLY's): refused, nothing written.
    os.mkfifo(inside / "trap.ply")
    with pytest.raises(ValueError, match="trap.ply exists and is not a regular file"):
        feed.session.save_map("trap.npz", inside)
    long = "m" * (os.pathconf(inside, "PC_NAME_MAX") - len(".ply"))  # .npz and .ply fit, .mesh.ply does not
    with pytest.raises(ValueError, match="longer than a file name may be"):
        feed.session.save_map(f"{long}.npz", inside)
    # A name that is no UTF-8 (a link's target): measured in the filesystem's bytes, saved.
    (inside / "odd.npz").symlink_to(inside / os.fsdecode(b"odd-\xff.npz"))
    assert feed.session.save_map("odd.npz", inside)[1] == str(inside / os.fsdecode(b"odd-\xff.npz"))
    assert sorted(p.name for p in inside.iterdir()) == sorted(["a.mesh.ply", "a.npz", "a.ply", "link.npz", "trap.ply",
                                                               "odd.npz"] + [os.fsdecode(b"odd-\xff" + x) for x in
                                                                             (b".npz", b".ply", b".mesh.ply")])


def test_a_saved_map_loads_back_exactly_and_mapping_goes_on(scene, tmp_path):
    feed = Feed(scene)
    for k in range(3):
        feed.capture(k)
    feed.session.save_map(tmp_path / "map.npz")
    saved = feed.session.pipeline.map.state()
    again = Feed(scene)  # a restart
    blocks, path = again.session.load_map(tmp_path / "map.npz")
    assert blocks == len(feed.session.pipeline.map) and path == str(tmp_path / "map.npz")
    loaded = again.session.pipeline.map.state()
    for name in ("keys", "tsdf", "weight", "rgb", "looks", "front"):
        np.testing.assert_array_equal(loaded[name], saved[name])
    snap, frame_id, stamp = again.session.map(0)
    assert frame_id == "odom" and stamp == feed.session.map(0)[2] and snap.pose_frame == "world"
    np.testing.assert_array_equal(snap.points, feed.session.map(0)[0].points)
    again.capture(3)  # mapping goes on into the loaded map
    feed.capture(3)
    np.testing.assert_array_equal(again.session.pipeline.map.state()["tsdf"], feed.session.pipeline.map.state()["tsdf"])
    # Refused, the map left as it is: mapped with poses where this node maps without them (its next
    # window would clear it), another frame, another voxel size, not a map, missing.
    image_only = Feed(scene, use_poses=False)
    with pytest.raises(ValueError, match="in the world frame, but this node maps without poses"):
        image_only.session.load_map(tmp_path / "map.npz")
    other = Feed(scene, world_frame="map_world")
    with pytest.raises(ValueError, match="saved in frame 'odom'"):
        other.session.load_map(tmp_path / "map.npz")
    coarse = Feed(scene, map_voxel_size=0.1)
    with pytest.raises(ValueError, match="voxel_size"):
        coarse.session.load_map(tmp_path / "map.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="cannot be read"):
        again.session.load_map(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="does not exist"):
        again.session.load_map(tmp_path / "none.npz")
    assert len(again.session.pipeline.map) > 0 and len(coarse.session.pipeline.map) == 0 == len(image_only.session.pipeline.map)


def test_a_save_removes_what_a_killed_save_left(scene, tmp_path):
    """A process killed while writing a save leaves its temporary file (hundreds of MB); a later save
    beside it removes it once it is ORPHAN_AGE_S old, and keeps young ones (a writer in another pid
    namespace looks dead), those of running processes, other files and names it did not make."""
    import subprocess
    import sys

    from mapanything_ros.session.session import ORPHAN_AGE_S

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    old = time.time() - ORPHAN_AGE_S - 10
    try:
        names = {f".mapanything-{gone.pid}-x1y2.npz": True, f".mapanything-{gone.pid}-x5y6.ply": False,  # young
                 f".mapanything-{running.pid}-x3y4.ply": False, ".mapanything-notes.npz": False,
                 ".mapanything-2147483648-x.npz": False, ".mapanything-\u00b2-x.npz": False,
                 f".mapanything-{gone.pid}-dir.npz": False,
                 f".mapanything-{os.getpid()}-z9.npz": True}  # this pid's, from before this process (a restart)
        for name in names:
            if name.endswith("dir.npz"):
                (tmp_path / name).mkdir()
            else:
                (tmp_path / name).write_bytes(b"partial")
            if name == f".mapanything-{os.getpid()}-z9.npz":  # before this process began (it may be old itself)
                os.utime(tmp_path / name, (0, 0))
            elif name != f".mapanything-{gone.pid}-x5y6.ply":
                os.utime(tmp_path / name, (old, old))
        feed = Feed(scene)
        for k in range(3):
            feed.capture(k)
        feed.session.save_map(tmp_path / "map.npz")
        assert {name: not (tmp_path / name).exists() for name in names} == names
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".mapanything-{os.getpid()}-")]
    finally:
        running.kill()
        running.wait()


def test_crafted_map_files_are_refused_and_leave_the_map(scene, tmp_path):
    """Map files a hostile tester made from a saved one: a scalar turned into an array, an array
    dropped, half the blocks with a bad stamp, an array whose header declares terabytes. Each is
    refused with a ValueError naming what is wrong, and the map stays as it was (no half load)."""
    import io
    import zipfile

    feed = Feed(scene)
    for k in range(3):
        feed.capture(k)
    feed.session.save_map(tmp_path / "map.npz")
    with np.load(tmp_path / "map.npz") as data:
        good = {k: data[k] for k in data.files}
    half = len(good["keys"]) // 2
    cases = {
        "voxel_size": ({**good, "voxel_size": np.array([0.05, 0.05])}, "voxel_size is not a number"),
        "front": ({k: v for k, v in good.items() if k != "front"}, r"lacks \['front'\]"),
        "stamp": ({**good, **{k: good[k][:half] for k in ("keys", "tsdf", "weight", "rgb", "looks", "front")},
                   "stamp_ns": np.array([1, 2])}, "stamp_ns is missing or not a single integer"),
        "frame": ({**good, "pose_frame": np.array(3)}, "not a saved map: its pose frame is '3'"),
        "world": ({**good, "frame_id": np.array("map")}, "saved in frame 'map'; this node maps world poses in 'odom'"),
        "text": ({**good, "tsdf": np.full(good["tsdf"].shape, "x")}, "tsdf are not numbers"),
    }
    before = feed.session.pipeline.map.state()
    for name, (state, text) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **state)
        with pytest.raises(ValueError, match=text):
            feed.session.load_map(tmp_path / f"{name}.npz")
    # a member whose header declares 51e12 float32 values, a few bytes stored
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (51_000_000_000_000,)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        for k, v in good.items():
            with z.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, v)
        z.writestr("tsdf2.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\0" * 64)
    with pytest.raises(ValueError, match="declares"):
        feed.session.load_map(tmp_path / "huge.npz")
    # Pipeline.load_map's own checks (the session refuses a non-text pose frame first, by its frame)
    for state, text in (({**good, "pose_frame": np.array(3)}, "pose_frame is missing or not a single str"),
                        ({k: v for k, v in good.items() if k != "stamp_ns"}, "stamp_ns is missing")):
        with pytest.raises(ValueError, match=text):
            feed.session.pipeline.load_map(state)
    # what a map of map_max_voxels cannot hold is not read (a compressed member is as large as it declares)
    small = Feed(scene, map_max_voxels=64)
    with pytest.raises(ValueError, match="more than a map of map_max_voxels holds"):
        small.session.load_map(tmp_path / "map.npz")
    # a member that is no .npy array is left alone, as np.load leaves it
    with zipfile.ZipFile(tmp_path / "noted.npz", "w") as z:
        for k, v in good.items():
            with z.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, v)
        z.writestr("notes.txt", b"lab, second floor")
    assert feed.session.load_map(tmp_path / "noted.npz")[0] == len(good["keys"])
    before = feed.session.pipeline.map.state()
    after = feed.session.pipeline.map.state()
    for name in ("keys", "tsdf", "weight", "front"):
        np.testing.assert_array_equal(after[name], before[name])


@pytest.mark.parametrize("mode", ["wait", "drop"])
def test_a_silent_camera_stops_the_outputs_or_is_left_out(scene, mode):
    """One of two cameras stops for 2 s, then comes back. silent_camera: wait (the default) makes no
    capture meanwhile and says so; drop maps on with the other camera's views, and takes the
    camera back when it returns. Both say which camera is silent."""
    feed = Feed(scene, silent_camera=mode, camera_timeout=0.5)
    names, frame_ids, offsets = feed.names, feed.frame_ids, feed.offsets
    for k in range(4):
        feed.capture(k)
    before = len(feed.outputs)
    feed.names, feed.frame_ids, feed.offsets = names[:1], frame_ids[:1], offsets[:1]
    for k in range(4, 24):
        feed.capture(k)
        feed.session.check_silence(START + k * 100 * MS)
    during = len(feed.outputs)
    feed.names, feed.frame_ids, feed.offsets = names, frame_ids, offsets
    for k in range(24, 30):
        feed.capture(k)
    feed.session.finish(START + 4 * SEC)
    said = [r for r in feed.reports if r[1] == "silent"]
    assert said and said[0][0] == f"camera {names[1]}" and said[0][2] == 1  # WARN
    if mode == "wait":
        assert during == before and "silent_camera: drop maps on" in said[0][3]
    else:
        assert during - before >= 15 and {len(o.cameras) for o in feed.outputs[before:during]} == {1}
        assert "captures go on without it" in said[0][3]
    assert len(feed.outputs[-1].cameras) == 2  # back: both cameras again


def test_cameras_whose_stamps_never_match_are_said(scene):
    """Two cameras at 10 Hz whose stamps are 0.55 s apart (50 ms off any pairing: beyond sync_slop):
    every image is dropped unmatched, no capture is made; that is said with the stamps' offset (it
    was counted only). In step, nothing is said."""
    apart, together = Feed(scene, offsets_ms=(0, 550)), Feed(scene)
    for feed in (apart, together):
        feed.session.check_silence(START)
        for k in range(10):
            feed.capture(k)
        feed.session.check_silence(START + SEC)
    said = [r for r in apart.reports if r[1] == "unmatched"]
    assert len(said) == 1 and said[0][0] == "sync" and said[0][2] == 1, apart.reports  # WARN
    assert "images dropped unmatched and 0 captures made" in said[0][3] and "+0.550 s" in said[0][3], said
    assert not [r for r in together.reports if r[1] == "unmatched"] and together.session.sync.stats()["captures"] >= 9
    # A 30 Hz camera beside a 10 Hz one, triggered together: two of its three images match nothing, rightly.
    mixed = Feed(scene)
    mixed.session.check_silence(START)
    fast, slow = mixed.names
    for k in range(30):
        stamp = START + k * 100 * MS // 3
        for name in [fast] + ([slow] if k % 3 == 0 else []):
            mixed.tree.set_transform("odom", name, stamp, scene.world_from_camera(name, stamp))
            view = scene.render(name, stamp)
            mixed.session.camera_info(name, MSGS.camera_info(view.camera, MSGS.header(name, stamp)))
            mixed.session.image(name, MSGS.image(view.image, "rgb8", MSGS.header(name, stamp)), stamp)
        mixed.session.tick(stamp)
    mixed.session.check_silence(START + SEC)
    stats = mixed.session.sync.stats()
    assert stats["dropped"]["unmatched"] >= 15 and stats["captures"] >= 9, stats
    assert not [r for r in mixed.reports if r[1] == "unmatched"], mixed.reports


def test_keyframes_beyond_the_maps_extent_are_said(scene):
    """A camera posed beyond the map's extent (a UTM-like world frame at 5 mm voxels): the map keeps
    nothing of it, which is said once with the extent (it was silent)."""
    feed = Feed(scene, map_voxel_size=0.005)
    far = np.eye(4)
    far[0, 3] = 1.01 * feed.session.pipeline.map.extent  # 21.2 km at 5 mm
    real = feed.scene

    class Far:  # the scene's cameras moved by `far` in odom (TF and the oracle's truth alike)
        cameras = real.cameras

        def world_from_camera(self, name, stamp):
            return far @ real.world_from_camera(name, stamp)

        def render(self, name, stamp):
            return real.render(name, stamp)

    feed.scene = Far()
    for k in range(3):
        feed.capture(k)
    feed.session.check_silence(START + SEC)
    stats = feed.session.pipeline.stats()
    said = [r for r in feed.reports if r[1] == "map_outside"]
    assert stats.map_outside > 0 and len(said) == 1 and said[0][2] == 1, feed.reports  # WARN
    assert "the map holds ±21 km at map_voxel_size 0.005 m" in said[0][3], said
    assert feed.session.status_values()["pipeline"]["map_outside"] == stats.map_outside
    feed.session.check_silence(START + 2 * SEC)  # nothing new: not said again
    assert len([r for r in feed.reports if r[1] == "map_outside"]) == 1


def test_a_keyframe_too_large_for_the_map_bound_is_said(scene):
    """A map voxel so fine that one keyframe's blocks pass map_max_voxels: the map keeps only the
    keyframe's nearest blocks and forgets the rest; that is said (not an empty map in silence)."""
    feed = Feed(scene, map_voxel_size=0.01, map_max_voxels=64 * 2000)
    for k in range(3):
        feed.capture(k)
    feed.session.check_silence(START + SEC)
    stats = feed.session.pipeline.stats()
    assert stats.map_overflows > 0 and stats.map_blocks <= 2000
    said = [r for r in feed.reports if r[1] == "map_overflow"]
    assert len(said) == 1 and said[0][2] == 1  # WARN
    assert "raise map_max_voxels or map_voxel_size" in said[0][3]
    assert f"({stats.map_overflows} keyframe views so far)" in said[0][3]
    assert feed.session.status_values()["pipeline"]["map_overflows"] == stats.map_overflows
    feed.session.check_silence(START + 2 * SEC)  # nothing new: not said again
    assert len([r for r in feed.reports if r[1] == "map_overflow"]) == 1
    # at the default voxel size the same keyframes fit
    fine = Feed(scene)
    for k in range(3):
        fine.capture(k)
    fine.session.check_silence(START + SEC)
    assert fine.session.pipeline.stats().map_overflows == 0 and not [r for r in fine.reports if r[1] == "map_overflow"]


def test_any_camera_timeout_the_parameters_accept_starts(scene):
    """camera_timeout is any positive value: 1e-10 s (0 ns when truncated) made the sync refuse
    to start, at start-up only (a change at run time was rounded up to 1 ns)."""
    feed = Feed(scene, camera_timeout=1e-10)
    assert feed.session.sync.camera_timeout_ns == 1
    feed.session.configure({**feed.session.values, "camera_timeout": 2e-10})
    assert feed.session.sync.camera_timeout_ns == 1


def test_a_bag_looping_on_a_foreign_clock_keeps_its_depth_and_cameras(scene):
    """use_sim_time false, stamps 1000 s behind the arrival clock (a bag played without --clock),
    and the bag loops, its LiDAR first: the stamps jump back 30 s while the arrival clock goes on.
    The lags of the old timeline held for the new one put the sync's clock 30 s ahead of the
    stamps: captures stopped waiting for their sweep (none had depth) and the camera was said
    silent at every check while windows came out. A lag longer by more than camera_timeout is a
    new timeline: the old lags and the clock made from them go."""
    feed = Feed(scene, offsets_ms=(0,), depth_source="lidar", camera_timeout=5.0)
    session, cam, offset, jump = feed.session, feed.names[0], 1000 * SEC, 30 * SEC

    def capture(stamp, arrival):
        for t in range(stamp - 100 * MS, stamp + 100 * MS, 10 * MS):
            feed.tree.set_transform("odom", cam, t, scene.world_from_camera(cam, t))
            feed.tree.set_transform("odom", "lidar", t, scene.world_from_lidar(t))
        sweep = scene.sweep(stamp - 50 * MS)
        session.lidar(MSGS.cloud(sweep.points, MSGS.header("lidar", sweep.start_ns), sweep.times_ns - sweep.start_ns),
                      arrival)
        session.tick(arrival + 10 * MS)
        view = scene.render(cam, stamp)
        session.camera_info(cam, MSGS.camera_info(view.camera, MSGS.header(cam, stamp)))
        session.image(cam, MSGS.image(view.image, "rgb8", MSGS.header(cam, stamp)), arrival + 20 * MS)
        session.tick(arrival + 70 * MS)

    for k in range(20):
        capture(START + jump + k * 100 * MS, START + jump + k * 100 * MS + offset)
    attached = session.sync.stats()["depth"]["lidar"]["attached"]
    arrival = START + jump + 19 * 100 * MS + offset
    for k in range(60):
        capture(START + k * 100 * MS, arrival + (k + 1) * 100 * MS)
        if k % 10 == 0:
            session.check_silence(arrival + (k + 1) * 100 * MS)
    assert attached == 20 and session.sync.stats()["depth"]["lidar"]["attached"] - attached >= 55
    assert [r[3] for r in feed.reports if r[1] == "reset"] and not [r for r in feed.reports if r[1] == "silent"]


def test_a_sim_clock_starting_late_says_no_camera_silent(scene):
    """use_sim_time with /clock starting after the node: its ticks at time 0 made 0 the origin of
    silence, so the first check on the running clock said every camera silent for 100 s."""
    feed = Feed(scene, camera_timeout=5.0)
    for _ in range(3):
        feed.session.tick(0)
        feed.session.check_silence(0)
    feed.session.tick(START - SEC)
    feed.session.check_silence(START - SEC)
    for k in range(3):
        feed.capture(k)
        feed.session.check_silence(START + k * 100 * MS)
    assert feed.outputs and not [r for r in feed.reports if r[1] == "silent"]


def test_without_a_clock_silence_is_measured_in_message_time(scene):
    """use_sim_time and no /clock (a bag played without --clock): the node clock reads 0 and the
    node maps by message time; a camera and the LiDAR that never publish are said silent by it
    (a first mend of the late /clock returned before any check)."""
    feed = Feed(scene, camera_timeout=1.0, depth_source="lidar")
    cam = feed.names[0]
    for k in range(30):
        stamp = START + k * 100 * MS
        view = scene.render(cam, stamp)
        feed.session.camera_info(cam, MSGS.camera_info(view.camera, MSGS.header(cam, stamp)))
        feed.session.image(cam, MSGS.image(view.image, "rgb8", MSGS.header(cam, stamp)), 0)
        feed.session.tick(0)
        if k % 10 == 9:
            feed.session.check_silence(0)
    assert sorted({r[0] for r in feed.reports if "silent" in r[1]}) == [f"camera {feed.names[1]}", "depth"]


def test_a_capture_of_the_old_timeline_completing_after_the_clock_jumped_back_is_dropped(scene):
    """/clock jumps back 60 s between the two images of one capture: the capture completing after
    it is of the old timeline (stamped 60 s ahead of the new clock): dropped with the sync's
    buffers, not admitted to the fresh window and published."""
    feed = Feed(scene)
    for k in range(5):
        feed.capture(k)
    before, stamp = len(feed.outputs), START + 5 * 100 * MS
    for i, name in enumerate(feed.names):
        feed.tree.set_transform("odom", name, stamp, scene.world_from_camera(name, stamp))
        view = scene.render(name, stamp)
        feed.session.camera_info(name, MSGS.camera_info(view.camera, MSGS.header(name, stamp)))
        if i == 1:
            feed.session.clock_jumped_back(stamp - 60 * SEC, 60 * SEC)
        feed.session.image(name, MSGS.image(view.image, "rgb8", MSGS.header(name, stamp)),
                           stamp if i == 0 else stamp - 60 * SEC)
    feed.session.tick(stamp - 60 * SEC + 10 * MS)
    stats = feed.session.pipeline.stats()
    assert feed.outputs[before:] == [] and stats.window_resets == 1 and feed.session.sync.stats()["dropped"]["stale"] == 1
    for k in range(3):  # the new timeline maps
        base = START - 60 * SEC + (6 + k) * 100 * MS
        for name in feed.names:
            feed.tree.set_transform("odom", name, base, scene.world_from_camera(name, base))
            view = scene.render(name, base)
            feed.session.camera_info(name, MSGS.camera_info(view.camera, MSGS.header(name, base)))
            feed.session.image(name, MSGS.image(view.image, "rgb8", MSGS.header(name, base)), base)
        feed.session.tick(base + 10 * MS)
    assert len(feed.outputs) > before


@pytest.mark.parametrize("lidar_frame", ["ghost_lidar", "", "/lidar"])
def test_a_lidar_tf_cannot_place_leaves_the_cameras_mapping(scene, lidar_frame):
    """Once sweeps have failed for tf_timeout with a frame TF does not know, captures go out at once
    without them, said and counted (every capture was dropped: one bad LiDAR frame stopped all
    mapping; the first mend waited tf_timeout for each, and at 30 Hz the TF queue overflowed first);
    an empty or '/'-led frame_id, which tf2 refuses, is refused on arrival as bad input. When a
    camera's TF is missing too, the drop names the camera's."""
    feed = Feed(scene, offsets_ms=(0,), depth_source="lidar")  # tf_timeout 0.5 s, captures at 30 Hz
    session, cam = feed.session, feed.names[0]
    period = 33 * MS
    for k in range(40):
        stamp = START + k * period
        for t in (stamp - period, stamp, stamp + period):
            feed.tree.set_transform("odom", cam, t, scene.world_from_camera(cam, t))
        sweep = scene.sweep(stamp - 50 * MS)
        session.lidar(MSGS.cloud(sweep.points, MSGS.header(lidar_frame, sweep.start_ns),
                                 sweep.times_ns - sweep.start_ns), stamp)
        view = scene.render(cam, stamp)
        frame = "ghost_camera" if k == 39 else cam  # the last capture: the camera's TF missing too
        session.camera_info(cam, MSGS.camera_info(view.camera, MSGS.header(frame, stamp)))
        session.image(cam, MSGS.image(view.image, "rgb8", MSGS.header(frame, stamp)), stamp + 10 * MS)
        session.tick(stamp + 20 * MS)
    session.finish(START + 2 * SEC)
    stats = session.stats()
    # (the first tf_timeout waits, as for a LiDAR's TF at start-up: a few captures overflow the TF queue)
    lost = stats["drops"]["queue"] if lidar_frame == "ghost_lidar" else 0
    assert lost <= 6 and stats["frames"] == 39 - lost and stats["drops"]["tf_timeout"] == 1
    assert not any(any(v[5] for v in out.views()) for out in feed.outputs)  # no depth given
    dropped = [r[3] for r in feed.reports if r[1] == "timeout"]
    assert dropped and "ghost_camera" in dropped[0]
    if lidar_frame == "ghost_lidar":
        said = [r[3] for r in feed.reports if r[1] == "lidar_timeout"]
        assert said and "goes out without its LiDAR sweep" in said[0] and "ghost_lidar" in said[0]
        assert stats["ignored"]["lidar"] == 39 - lost == session.status_values()["depth"]["lidar_ignored"]
    else:
        said = [r[3] for r in feed.reports if r[1] == "lidar_frame"]
        assert said and session.drops["bad_input"] == 40
        assert ("without header.frame_id" if not lidar_frame else "starts with '/'") in said[0]


def test_an_image_frame_id_led_by_a_slash_maps_image_only(scene):
    """use_poses false needs no TF for the cameras: a '/'-led frame_id maps as before (the refusal
    of such ids is for sweeps, which TF must place)."""
    feed = Feed(scene, offsets_ms=(0,), frame_ids=["/front"], use_poses=False)
    for k in range(3):
        feed.capture(k)
    assert feed.session.stats()["frames"] == 3 and feed.session.drops["bad_input"] == 0  # (the oracle knows no /front)


@pytest.mark.parametrize("case", ["registered", "other_frame", "other_size", "all_nan"])
def test_a_depth_image_not_registered_to_its_camera_is_ignored_and_counted(scene, case):
    """A depth image in another frame (an unregistered depth camera's: it was used as registered),
    of another size, or without a valid pixel: said, counted as ignored (it was counted attached, or
    nothing was said), the captures go on without it."""
    feed = Feed(scene, offsets_ms=(0,), depth_source="depth_image", keep_measured_depth=True)
    session, cam = feed.session, feed.names[0]
    for k in range(4):
        stamp = START + k * 100 * MS
        feed.tree.set_transform("odom", cam, stamp, scene.world_from_camera(cam, stamp))
        view = scene.render(cam, stamp)
        depth = view.depth_z.astype(np.float32)
        frame = cam
        if case == "other_frame":
            frame, depth = "depth_optical", np.full_like(depth, 1.0)  # what the tester's unregistered camera sent
        elif case == "other_size":
            depth = np.ones((2 * depth.shape[0], 2 * depth.shape[1]), np.float32)
        elif case == "all_nan":
            depth = np.full_like(depth, np.nan)
        session.depth_image(cam, MSGS.image(depth, "32FC1", MSGS.header(frame, stamp)), stamp)
        session.camera_info(cam, MSGS.camera_info(view.camera, MSGS.header(cam, stamp)))
        session.image(cam, MSGS.image(view.image, "rgb8", MSGS.header(cam, stamp)), stamp)
        session.tick(stamp + 10 * MS)
    session.finish(START + SEC)
    used = [any(v[5] for v in out.views()) for out in feed.outputs]
    stats = session.stats()
    assert used == [case == "registered"] * 4
    assert stats["sync"]["depth"][cam]["attached"] == 4 and stats["drops"]["bad_input"] == 0
    assert stats["ignored"][cam] == (0 if case == "registered" else 4)
    assert session.status_values()["depth"][f"{cam}_ignored"] == stats["ignored"][cam]
    said = [r for r in feed.reports if r[1] == f"ignored {cam}"]
    assert bool(said) == (case != "registered")
    if said:
        assert said[0][3].startswith(f"{cam} depth: depth image ")  # the topic as every message names it
        assert {"other_frame": "in frame 'depth_optical', the camera's images in",
                "other_size": "not registered to the", "all_nan": "no valid pixel"}[case] in said[0][3]
        assert said[0][2] == (1 if case == "all_nan" else 2)
    if case == "other_frame":  # nothing of the 1 m the unregistered camera gave was published
        for out in feed.outputs:
            d = out.view(out.cameras[0]).depth
            assert not np.isclose(d[np.isfinite(d)], 1.0, atol=1e-3).all()


def test_a_depth_source_stopping_or_stamped_out_of_reach_is_said_for_what_it_is(scene):
    """A LiDAR that stops is said silent, not "N captures without depth: check the stamps" (both
    were said); one whose sweeps arrive stamped seconds behind the images is said to arrive out of
    reach of their stamps, not "no LiDAR sweep" (the silence check went by stamps alone), and its
    clock going back alone leaves the cameras mapping."""
    feed = Feed(scene, offsets_ms=(0,), depth_source="lidar", camera_timeout=1.0)
    session, cam = feed.session, feed.names[0]

    def capture(k, sweep_offset=None):
        stamp = START + k * 100 * MS
        for t in range(stamp - 100 * MS, stamp + 100 * MS, 10 * MS):
            feed.tree.set_transform("odom", cam, t, scene.world_from_camera(cam, t))
            feed.tree.set_transform("odom", "lidar", t, scene.world_from_lidar(t))
        if sweep_offset is not None:
            sweep = scene.sweep(stamp - 50 * MS)
            session.lidar(MSGS.cloud(sweep.points, MSGS.header("lidar", sweep.start_ns + sweep_offset),
                                     sweep.times_ns - sweep.start_ns), stamp)
        view = scene.render(cam, stamp)
        session.camera_info(cam, MSGS.camera_info(view.camera, MSGS.header(cam, stamp)))
        session.image(cam, MSGS.image(view.image, "rgb8", MSGS.header(cam, stamp)), stamp + 10 * MS)
        session.tick(stamp + 60 * MS)
        if k % 5 == 4:
            session.check_silence(stamp + 60 * MS)

    for k in range(5):
        capture(k, 0)
    for k in range(5, 30):  # the LiDAR stops
        capture(k)
    said = {r[1]: r[3] for r in feed.reports}
    assert "no LiDAR sweep on lidar depth for 1.0 s" in said.get("silent lidar", "") and "missing lidar" not in said
    feed.reports.clear()
    before = len(feed.outputs)
    for k in range(30, 60):  # back, stamped 3 s behind the images: its clock alone went back
        capture(k, -3 * SEC)
    said = {r[1]: r[3] for r in feed.reports}
    assert "LiDAR sweeps arrive on lidar depth but none stamped within camera_timeout" in said.get("silent lidar", "")
    assert "captures in a row without depth" in said.get("missing lidar", "")
    # The cameras go on: no reset of the sync and the window, no camera said silent, no image lost
    # (the LiDAR's jump reset both, and the camera's images were dropped as of the old timeline).
    assert "depth source lidar: time jumped back by" in said.get("early", "") and "silent" not in said
    assert "reset" not in said and session.pipeline.stats().window_resets == 0
    assert len(feed.outputs) - before == 30 and session.sync.stats()["dropped"]["stale"] == 0


def test_a_sweep_whose_tf_is_late_is_waited_for(scene):
    """A sweep whose transforms are still to come (TF late, not unknown) is waited for, up to
    tf_timeout, and used; when a camera's TF is missing as well, the drop names the camera's."""
    feed = Feed(scene, offsets_ms=(0,), depth_source="lidar", tf_timeout=0.3)
    session, cam = feed.session, feed.names[0]
    for k in range(6):
        stamp = START + k * 100 * MS
        frame = "ghost_camera" if k == 5 else cam
        for t in range(stamp - 100 * MS, stamp + 100 * MS, 10 * MS):
            feed.tree.set_transform("odom", cam, t, scene.world_from_camera(cam, t))
        sweep = scene.sweep(stamp - 50 * MS)
        session.lidar(MSGS.cloud(sweep.points, MSGS.header("lidar", sweep.start_ns), sweep.times_ns - sweep.start_ns),
                      stamp)
        view = scene.render(cam, stamp)
        session.camera_info(cam, MSGS.camera_info(view.camera, MSGS.header(frame, stamp)))
        session.image(cam, MSGS.image(view.image, "rgb8", MSGS.header(frame, stamp)), stamp + 10 * MS)
        session.tick(stamp + 20 * MS)  # the LiDAR's TF for this sweep is not there yet
        if k < 5:
            for t in range(stamp - 100 * MS, stamp + 100 * MS, 10 * MS):
                feed.tree.set_transform("odom", "lidar", t, scene.world_from_lidar(t))
            session.tick(stamp + 30 * MS)
    session.tick(START + 2 * SEC)
    assert len(feed.outputs) == 5 and all(v[5] for out in feed.outputs for v in out.views() if v[0] == out.stamp_ns)
    dropped = [r[3] for r in feed.reports if r[1] == "timeout"]
    assert session.drops["tf_timeout"] == 1 and "ghost_camera" in dropped[0], dropped
