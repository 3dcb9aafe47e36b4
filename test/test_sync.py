"""CaptureSync: approximate-time image sets, optional depth, bag loops, silent cameras, bounds."""

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapanything_ros.sync import LATE_RUN, LEFTOVER_RUN, Capture, CaptureSync

MS = 1_000_000
PERIOD = 33 * MS  # a 30 Hz camera


def feed(sync, messages):
    """Sends (kind, name, stamp, payload) messages in order; returns every capture emitted."""
    out = []
    for kind, name, stamp, payload in messages:
        add = sync.add_image if kind == "image" else sync.add_depth
        out += add(name, stamp, payload)
    return out


def rig_stream(cameras, frames, jitter_ms, seed=0, missing=()):
    """Images of `cameras` at PERIOD with uniform jitter, interleaved in stamp order; payload (camera, frame)."""
    rng = random.Random(seed)
    msgs = []
    for k in range(frames):
        for cam in cameras:
            if (cam, k) not in missing:
                stamp = 1000 * MS + k * PERIOD + rng.randint(-jitter_ms * MS, jitter_ms * MS)
                msgs.append(("image", cam, stamp, (cam, k)))
    return sorted(msgs, key=lambda m: m[2])


def frame_ids(capture):
    return {payload[1] for _, payload in capture.images.values()}


@pytest.mark.parametrize("cameras", [["a", "b"], ["a", "b", "c"]])
def test_jittered_rig_pairs_frame_by_frame(cameras):
    sync = CaptureSync(cameras, slop_ns=10 * MS, depth_wait_ns=0)
    captures = feed(sync, rig_stream(cameras, 40, jitter_ms=4, seed=len(cameras)))
    assert len(captures) == 40
    for k, cap in enumerate(captures):
        assert list(cap.images) == cameras
        assert frame_ids(cap) == {k}
        stamps = [t for t, _ in cap.images.values()]
        assert max(stamps) - min(stamps) <= 10 * MS
        assert min(stamps) <= cap.stamp_ns <= max(stamps)
    assert sync.stats()["dropped"] == {"unmatched": 0, "overflow": 0, "stale": 0, "reset": 0}
    assert sync.stats()["captures"] == 40


def test_single_camera_every_image_is_a_capture():
    sync = CaptureSync(["a"], slop_ns=0, depth_wait_ns=0)
    captures = feed(sync, rig_stream(["a"], 5, jitter_ms=3))
    assert [frame_ids(c) for c in captures] == [{k} for k in range(5)]
    assert [c.stamp_ns for c in captures] == [c.images["a"][0] for c in captures]


def test_stamps_outside_slop_never_pair():
    sync = CaptureSync(["a", "b"], slop_ns=10 * MS, max_pending=5)
    msgs = [("image", "a", k * 100 * MS, ("a", k)) for k in range(30)]
    msgs += [("image", "b", k * 100 * MS + 50 * MS, ("b", k)) for k in range(30)]
    assert feed(sync, sorted(msgs, key=lambda m: m[2])) == []
    stats = sync.stats()
    assert stats["dropped"]["unmatched"] >= 58  # everything but the newest heads, decided as soon as possible
    assert max(stats["queued"]["images"].values()) <= 1


def test_missing_frame_does_not_misalign_later_pairs():
    sync = CaptureSync(["a", "b"], slop_ns=10 * MS, depth_wait_ns=0)
    captures = feed(sync, rig_stream(["a", "b"], 20, jitter_ms=4, seed=3, missing={("b", 5), ("a", 11), ("b", 12)}))
    assert [frame_ids(c) for c in captures] == [{k} for k in range(20) if k not in (5, 11, 12)]
    assert sync.stats()["dropped"]["unmatched"] == 3


def test_ambiguous_slop_prefers_the_tighter_set():
    # slop larger than the period: a0 could pair with b0, but a1 is far closer to it.
    sync = CaptureSync(["a", "b"], slop_ns=40 * MS, depth_wait_ns=0)
    assert sync.add_image("a", 0, "a0") == []
    assert sync.add_image("b", 30 * MS, "b0") == []  # a's next image may pair more tightly: wait
    assert sync.add_image("a", 31 * MS, "a1") == []  # a0 is dropped; b's gap is unknown yet: wait for b1
    (cap,) = sync.add_image("b", 63 * MS, "b1")
    assert {c: p for c, (_, p) in cap.images.items()} == {"a": "a1", "b": "b0"}
    assert sync.stats()["dropped"]["unmatched"] == 1


def lidar_stream(first_ms, step_ms, count):
    return [("depth", "lidar", (first_ms + k * step_ms) * MS, ("lidar", k)) for k in range(count)]


def test_lidar_nearest_in_time_within_tolerance():
    sync = CaptureSync(["a", "b"], slop_ns=10 * MS, depth_sources=["lidar"], depth_tolerance_ns=20 * MS,
                       depth_wait_ns=50 * MS)
    scans = lidar_stream(1000 - 40, 100, 12)  # 10 Hz, everything arrives in stamp order
    images = rig_stream(["a", "b"], 30, jitter_ms=2, seed=5)
    captures = feed(sync, sorted(scans + images, key=lambda m: m[2]))
    assert len(captures) == 30
    scan_stamps = [s for _, _, s, _ in scans]
    for cap in captures:
        nearest = min(scan_stamps, key=lambda s: abs(s - cap.stamp_ns))
        if abs(nearest - cap.stamp_ns) <= 20 * MS:
            assert cap.depth["lidar"][0] == nearest
        else:
            assert cap.depth == {}
    stats = sync.stats()["depth"]["lidar"]
    assert stats["attached"] == sum("lidar" in c.depth for c in captures) > 0
    assert stats["missing"] == sum("lidar" not in c.depth for c in captures) > 0


def test_per_camera_depth_is_matched_to_its_own_image():
    sync = CaptureSync(["a", "b"], slop_ns=10 * MS, depth_sources=["b"], depth_tolerance_ns=2 * MS, depth_wait_ns=0)
    feed(sync, [("depth", "b", 1007 * MS, "db"), ("image", "a", 1000 * MS, "a0"), ("image", "b", 1008 * MS, "b0")])
    (cap,) = sync.add_image("a", 1033 * MS, "a1")  # a's next image settles the set {a0, b0}
    assert cap.stamp_ns == 1004 * MS  # 3 ms from the depth; b's image is 1 ms from it
    assert cap.depth == {"b": (1007 * MS, "db")}


def test_late_depth_is_attached_within_the_wait():
    sync = CaptureSync(["a"], slop_ns=5 * MS, depth_sources=["lidar"], depth_tolerance_ns=20 * MS,
                       depth_wait_ns=100 * MS)
    assert sync.add_image("a", 1000 * MS, "a0") == []  # complete, but no depth within tolerance yet
    assert sync.poll(1050 * MS) == []
    (cap,) = sync.add_depth("lidar", 1015 * MS, "scan0")
    assert cap.depth == {"lidar": (1015 * MS, "scan0")}
    assert sync.add_image("a", 1100 * MS, "a1") == []
    (cap,) = sync.add_depth("lidar", 1130 * MS, "far")  # beyond tolerance, and later scans are further
    assert cap.depth == {}


def test_lidar_within_tolerance_releases_at_once_registered_depth_waits_for_the_nearest():
    lidar = CaptureSync(["a"], slop_ns=5 * MS, depth_sources=["lidar"], depth_tolerance_ns=20 * MS,
                        depth_wait_ns=100 * MS)
    assert lidar.add_image("a", 1000 * MS, "a0") == []
    (cap,) = lidar.add_depth("lidar", 1010 * MS, "scan0")  # motion-compensated: within tolerance is enough
    assert cap.depth == {"lidar": (1010 * MS, "scan0")}
    registered = CaptureSync(["a"], slop_ns=5 * MS, depth_sources=["a"], depth_tolerance_ns=20 * MS,
                             depth_wait_ns=100 * MS)
    assert registered.add_depth("a", 990 * MS, "d-10") == []
    assert registered.add_image("a", 1000 * MS, "a0") == []  # d-10 is within tolerance, but d0 may come
    (cap,) = registered.add_depth("a", 1000 * MS, "d0")  # exactly the image's stamp: nothing closer
    assert cap.depth == {"a": (1000 * MS, "d0")}
    assert registered.add_image("a", 1033 * MS, "a1") == []
    assert registered.add_depth("a", 1030 * MS, "d-3") == []  # 3 ms before: one nearer could still come
    (cap,) = registered.add_depth("a", 1040 * MS, "d7")  # later ones are further: d-3 is the nearest
    assert cap.depth == {"a": (1030 * MS, "d-3")}


def test_a_sweep_is_matched_by_the_span_of_its_point_times():
    sync = CaptureSync(["a"], slop_ns=5 * MS, depth_sources=["lidar"], depth_tolerance_ns=20 * MS,
                       depth_wait_ns=100 * MS)
    # stamped at its start, 100 ms long, published at its end: covers the image at 1060 ms
    assert sync.add_depth("lidar", 900 * MS, "sweep0", span=(900 * MS, 1000 * MS)) == []
    (cap,) = sync.add_image("a", 1015 * MS, "a0")  # 15 ms after sweep0 ended: within tolerance
    assert cap.depth == {"lidar": (900 * MS, "sweep0")}
    assert sync.add_image("a", 1030 * MS, "a1") == []  # 30 ms after: waits for the sweep covering it
    (cap,) = sync.add_depth("lidar", 1000 * MS, "sweep1", span=(1000 * MS, 1100 * MS))
    assert cap.depth == {"lidar": (1000 * MS, "sweep1")}
    with pytest.raises(ValueError, match="span"):
        sync.add_depth("lidar", 1100 * MS, "bad", span=(1200 * MS, 1100 * MS))


def test_depth_wait_ends_by_poll_or_message_time():
    sync = CaptureSync(["a"], slop_ns=5 * MS, depth_sources=["lidar"], depth_tolerance_ns=20 * MS,
                       depth_wait_ns=100 * MS)
    assert sync.add_image("a", 1000 * MS, "a0") == []
    assert sync.poll(1099 * MS) == []
    (cap,) = sync.poll(1100 * MS)
    assert cap.depth == {}
    # without polls, newer images move message time on: a capture waits at most depth_wait.
    released = [sync.add_image("a", (1100 + k * 33) * MS, k) for k in range(1, 10)]
    assert [len(r) for r in released] == [0, 0, 0, 0, 1, 1, 1, 1, 1]  # 1232 ms < 1133 + 100 ms <= 1265 ms
    assert sync.stats()["depth"]["lidar"]["missing"] == 6


def test_zero_depth_wait_emits_at_once_with_buffered_depth():
    sync = CaptureSync(["a"], slop_ns=5 * MS, depth_sources=["lidar"], depth_tolerance_ns=20 * MS, depth_wait_ns=0)
    sync.add_depth("lidar", 995 * MS, "scan")
    (cap,) = sync.add_image("a", 1000 * MS, "a0")
    assert cap.depth == {"lidar": (995 * MS, "scan")}
    (cap,) = sync.add_image("a", 1033 * MS, "a1")
    assert cap.depth == {}


def test_bag_loop_resets_once_with_a_reason():
    # A lap of 0.66 s: longer than the camera timeout, so its first message back is a jump, not a late one.
    sync = CaptureSync(["a", "b"], slop_ns=10 * MS, depth_sources=["lidar"], depth_wait_ns=60 * MS,
                       camera_timeout_ns=500 * MS)
    lap = rig_stream(["a", "b"], 20, jitter_ms=3, seed=7) + lidar_stream(1000, 100, 7)
    lap.sort(key=lambda m: m[2])
    first = feed(sync, lap) + sync.poll(2000 * MS)  # the poll releases the last captures' depth wait
    assert sync.take_resets() == []
    # The bag loops: "a" jumps back first while "b" and the lidar still send a last old message.
    first_a = next(m for m in lap if m[1] == "a")
    old = [("image", "b", 1000 * MS + 20 * PERIOD, "old b"), ("depth", "lidar", 1700 * MS, "old scan")]
    second = feed(sync, [first_a] + old + [m for m in lap if m is not first_a]) + sync.poll(2000 * MS)
    (reason,) = sync.take_resets()
    assert "time jumped back by" in reason and "camera a" in reason and "bag loop" in reason
    assert len(first) == 20 and len(second) == 20
    summary = [[(frame_ids(c), c.depth.get("lidar")) for c in caps] for caps in (first, second)]
    assert summary[0] == summary[1]  # the second lap behaves as the first
    stats = sync.stats()
    assert stats["resets"] == 1 and stats["last_reset"] == reason
    assert stats["dropped"]["stale"] == 1 and stats["depth"]["lidar"]["stale"] == 1


@pytest.mark.parametrize("on_silent", ["wait", "drop"])
def test_one_camera_jumping_back_for_good_does_not_silence_the_others(on_silent):
    """Only "b"'s clock steps back 2 s and stays there (a driver's fault): "a", which never jumped,
    is dropped as still on the old timeline for camera_timeout_ns of the new one, then carries on.
    No capture pairs the two timelines; with on_silent="drop" the captures come from "a" again, not
    from "b" alone for ever (they were, stamped on "b"'s wrong clock)."""
    sync = CaptureSync(["a", "b"], slop_ns=10 * MS, depth_wait_ns=0, camera_timeout_ns=500 * MS,
                       on_silent=on_silent)
    before = feed(sync, rig_stream(["a", "b"], 30, jitter_ms=2))
    later = [m if m[1] == "a" else (*m[:2], m[2] - 2000 * MS, m[3]) for m in rig_stream(["a", "b"], 120, jitter_ms=2)
             if m[3][1] >= 30]
    after = feed(sync, later)
    (reason,) = sync.take_resets()
    assert len(before) == 30 and "time jumped back by 1.9" in reason and "camera b" in reason
    assert sync.stats()["dropped"]["stale"] <= 500 * MS // PERIOD + 2  # "a", for the timeout at most
    if on_silent == "wait":
        assert after == [] and sync.stats()["dropped"]["unmatched"] > 50
    else:
        assert after and all(set(c.images) == {"a"} for c in after[-40:])
        assert sync.silent_cameras() == ["b"]


@pytest.mark.parametrize("now", [None, 500 * MS])
def test_after_the_node_clock_jumped_back_inputs_that_did_not_are_taken_again(now):
    """The node's clock jumped back (jumped_back) but the stamps did not (sensors stamped on another
    clock than a sim clock that was set back), or where the stamps stand is not known (None): the
    inputs' messages, all ahead of the new clock, are dropped as still on the old timeline for
    LEFTOVER_RUN messages each at most, then taken; captures go on."""
    sync = CaptureSync(["a", "b"], slop_ns=10 * MS, depth_wait_ns=0, camera_timeout_ns=500 * MS)
    stream = rig_stream(["a", "b"], 100, jitter_ms=2)
    assert len(feed(sync, stream[:40])) == 20
    sync.jumped_back(now, 1000 * MS)
    after = feed(sync, stream[40:])
    assert sync.take_resets() == [] and sync.stats()["dropped"]["stale"] == (
        0 if now is None else 2 * (LEFTOVER_RUN + LATE_RUN - 1))  # then each taken after LATE_RUN - 1 "early" ones
    assert len(after) >= (79 if now is None else 80 - LEFTOVER_RUN - LATE_RUN - 1)


def test_small_step_back_or_repeat_is_stale():
    sync = CaptureSync(["a"], slop_ns=10 * MS, depth_wait_ns=0)
    assert len(sync.add_image("a", 100 * MS, 0)) == 1
    assert sync.add_image("a", 100 * MS, 1) == []
    assert sync.add_image("a", 95 * MS, 2) == []
    assert sync.stats()["dropped"]["stale"] == 2 and sync.take_resets() == []


def test_a_late_frame_is_dropped_and_the_other_cameras_carry_on():
    """Frame 5 of "b" delivered after its frame 7 (out of order by 66 ms, beyond the slop): it alone
    is lost, no buffer is reset, and "a"'s frame 5 goes out unmatched."""
    sync = CaptureSync(["a", "b"], slop_ns=10 * MS, depth_wait_ns=0)
    msgs = rig_stream(["a", "b"], 12, jitter_ms=2, seed=4)
    late = next(m for m in msgs if m[1] == "b" and m[3] == ("b", 5))
    msgs.remove(late)
    msgs.insert(msgs.index(next(m for m in msgs if m[1] == "b" and m[3] == ("b", 7))) + 1, late)
    captures = feed(sync, msgs)
    assert [frame_ids(c) for c in captures] == [{k} for k in range(12) if k != 5]
    assert sync.take_resets() == [] and sync.stats()["resets"] == 0
    assert sync.stats()["dropped"] == {"unmatched": 1, "overflow": 0, "stale": 1, "reset": 0}


def test_a_short_jump_back_resets_after_a_run_of_late_messages():
    """A clock stepping back 0.3 s (under the camera timeout): the first LATE_RUN - 1 messages look
    late and are dropped; the next one resets, and captures resume on the new timeline."""
    sync = CaptureSync(["a"], slop_ns=10 * MS, depth_wait_ns=0)
    before = feed(sync, [("image", "a", 1000 * MS + k * PERIOD, ("a", k)) for k in range(20)])
    after = feed(sync, [("image", "a", 1000 * MS + 20 * PERIOD - 300 * MS + k * PERIOD, ("a", 100 + k))
                        for k in range(10)])
    assert len(before) == 20 and [frame_ids(c) for c in after] == [{k} for k in range(102, 110)]
    (reason,) = sync.take_resets()
    assert "time jumped back by 0.201 s on camera a" in reason
    assert sync.stats()["dropped"]["stale"] == 2


def test_a_spread_equal_to_the_slop_does_not_pair():
    """message_filters' rule: a set's spread must be below the slop."""
    sync = CaptureSync(["a", "b"], slop_ns=10 * MS, depth_wait_ns=0)
    assert feed(sync, [("image", "a", 100 * MS, 0), ("image", "b", 110 * MS, 0)]) == []
    (cap,) = feed(sync, [("image", "a", 200 * MS, 1), ("image", "b", 209 * MS, 1)])
    assert {c: p for c, (_, p) in cap.images.items()} == {"a": 1, "b": 1}


def test_silent_camera_is_reported_and_waited_for():
    sync = CaptureSync(["a", "b"], slop_ns=10 * MS, max_pending=8, camera_timeout_ns=500 * MS)
    msgs = rig_stream(["a", "b"], 40, jitter_ms=2, missing={("b", k) for k in range(10, 40)})
    captures = feed(sync, msgs)
    assert len(captures) == 10
    assert sync.silent_cameras() == ["b"]
    stats = sync.stats()
    assert stats["queued"]["images"]["a"] == 8 and stats["dropped"]["overflow"] == 30 - 8
    # A camera that never published counts from the first message (or the first poll time).
    fresh = CaptureSync(["a", "b"], slop_ns=10 * MS, camera_timeout_ns=500 * MS)
    assert fresh.silent_cameras(now_ns=0) == []
    assert fresh.silent_cameras(now_ns=600 * MS) == ["a", "b"]


@pytest.mark.parametrize("offset_ms", [30_000, -10_000])
def test_one_depth_source_with_a_wrong_clock_leaves_the_cameras_alone(offset_ms):
    """A LiDAR stamped 30 s ahead (or 10 s behind), then right again: no reset (it reset every
    buffer and the window, dropped the cameras' images as of the old timeline and had the camera
    said silent); its depth attached again once its clock is right, said in a refusal."""
    sync = CaptureSync(["a"], slop_ns=10 * MS, depth_sources=["lidar"], depth_tolerance_ns=20 * MS,
                       depth_wait_ns=50 * MS)
    out = []
    for k in range(10):
        stamp = 1000 * MS + k * 100 * MS
        out += sync.add_image("a", stamp, k)  # the image of the capture arrives first, its sweep after
        out += sync.add_depth("lidar", stamp + (offset_ms * MS if 2 <= k < 5 else -5 * MS), k)
        out += sync.poll(stamp)
    out += sync.poll(3000 * MS)
    assert sync.take_resets() == [] and sync.stats()["resets"] == 0 and sync.stats()["dropped"]["stale"] == 0
    assert any("depth source lidar: time jumped back by" in r for r in sync.take_refusals())
    assert [c.images["a"][1] for c in out] == list(range(10))
    assert [c.depth.get("lidar", (None, None))[1] for c in out[6:]] == [6, 7, 8, 9]


def test_one_message_stamped_far_ahead_is_dropped_without_a_reset():
    """One LiDAR sweep and one image stamped an hour ahead (issue 19: they reset every buffer and
    were reported as time jumping back): each is dropped with its reason; nothing else changes."""
    sync = CaptureSync(["a"], slop_ns=10 * MS, depth_sources=["lidar"], depth_tolerance_ns=20 * MS,
                       depth_wait_ns=50 * MS)
    hour = 3600 * 1000 * MS
    out = []
    for k in range(10):
        stamp = 1000 * MS + k * 100 * MS
        out += sync.add_image("a", stamp + (hour if k == 6 else 0), k)
        out += sync.add_depth("lidar", stamp + (hour if k == 3 else 0), k)
        out += sync.poll(stamp)
    out += sync.poll(3000 * MS)
    assert sync.take_resets() == [] and sync.stats()["resets"] == 0
    refusals = sync.take_refusals()
    assert len(refusals) == 2 and "depth source lidar" in refusals[0] and "camera a" in refusals[1]
    assert "3600.000 s ahead" in refusals[0] and "3600.100 s ahead" in refusals[1]
    assert [c.images["a"][1] for c in out] == [k for k in range(10) if k != 6]
    assert [c.depth.get("lidar", (None, None))[1] for c in out] == [0, 1, 2, None, 4, 5, 7, 8, 9]


def test_silent_depth_source_is_reported_in_image_time():
    sync = CaptureSync(["a", "front"], slop_ns=10 * MS, depth_sources=["lidar", "front"],
                       camera_timeout_ns=500 * MS, depth_wait_ns=0)
    assert sync.silent_depth_sources() == []
    for k in range(10):
        stamp = 1000 * MS + k * 100 * MS
        sync.add_depth("front", stamp, k)
        if k < 3:
            sync.add_depth("lidar", stamp, k)
        sync.add_image("a", stamp, k)
        sync.add_image("front", stamp, k)
    assert sync.silent_depth_sources() == ["lidar"]  # last sweep at 1.2 s, images up to 1.9 s
    sync.add_depth("lidar", 2000 * MS, 10)
    assert sync.silent_depth_sources() == []
    never = CaptureSync(["a"], slop_ns=10 * MS, depth_sources=["lidar"], camera_timeout_ns=500 * MS)
    feed(never, [("image", "a", 1000 * MS + k * 100 * MS, k) for k in range(6)])
    assert never.silent_depth_sources() == ["lidar"]  # counted from the first message


def test_silent_camera_dropped_gives_captures_with_fewer_views():
    sync = CaptureSync(["a", "b"], slop_ns=10 * MS, depth_wait_ns=0, camera_timeout_ns=200 * MS, on_silent="drop")
    missing = {("b", k) for k in range(10, 30)}
    captures = feed(sync, rig_stream(["a", "b"], 40, jitter_ms=2, missing=missing))
    views = [sorted(c.images) for c in captures]
    assert views[:10] == [["a", "b"]] * 10
    assert ["a"] in views and views[-5:] == [["a", "b"]] * 5  # "b" is back
    stamps = [c.stamp_ns for c in captures]
    assert stamps == sorted(set(stamps))


def test_invalid_configuration_and_names():
    with pytest.raises(ValueError, match="cameras"):
        CaptureSync([], slop_ns=0)
    with pytest.raises(ValueError, match="on_silent"):
        CaptureSync(["a"], slop_ns=0, on_silent="skip")
    sync = CaptureSync(["a"], slop_ns=0)
    with pytest.raises(ValueError, match="unknown camera"):
        sync.add_image("z", 0, None)
    with pytest.raises(ValueError, match="unknown depth source"):
        sync.add_depth("z", 0, None)


def test_threads_feeding_cameras_at_once():
    cameras = ["a", "b", "c"]
    sync = CaptureSync(cameras, slop_ns=5 * MS, depth_wait_ns=0, max_pending=500)
    out, out_lock = [], threading.Lock()

    def publish(cam):
        for k in range(300):
            caps = sync.add_image(cam, k * PERIOD, (cam, k))
            with out_lock:
                out.extend(caps)

    threads = [threading.Thread(target=publish, args=(c,)) for c in cameras]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(frame_ids(c).pop() for c in out) == list(range(300))
    assert all(len(frame_ids(c)) == 1 and len(c.images) == 3 for c in out)


# ---- property test: random rigs, jitter, drops, latencies, depth, polls and a bag loop ----------

@st.composite
def scenarios(draw):
    cameras = ["a", "b", "c"][: draw(st.integers(1, 3))]
    slop = draw(st.integers(0, 40)) * MS
    period = draw(st.integers(10, 60)) * MS
    jitter = draw(st.integers(0, 30)) * MS
    frames = draw(st.integers(1, 40))
    rng = random.Random(draw(st.integers(0, 2**32)))
    loop_at = draw(st.one_of(st.none(), st.integers(0, frames)))
    msgs = []  # (arrival, kind, name, stamp, payload)
    for cam in cameras + ["lidar"]:
        arrival = 0
        for k in range(frames):
            if rng.random() < 0.15:
                continue  # a dropped frame
            lap = 0 if loop_at is None or k < loop_at else 1
            stamp = (k - (loop_at if lap else 0)) * period + rng.randint(-jitter, jitter) + 10**9
            arrival = max(arrival, stamp + rng.randint(0, 80 * MS)) if lap == 0 else max(arrival + 1, (10**10) + stamp)
            kind = "depth" if cam == "lidar" else "image"
            msgs.append((arrival, kind, cam, stamp, (cam, lap, k)))
    msgs.sort(key=lambda m: m[0])
    config = dict(slop_ns=slop, depth_sources=["lidar"], depth_tolerance_ns=draw(st.integers(0, 50)) * MS,
                  depth_wait_ns=draw(st.integers(0, 150)) * MS, max_pending=draw(st.integers(1, 10)),
                  camera_timeout_ns=draw(st.integers(50, 500)) * MS, on_silent=draw(st.sampled_from(["wait", "drop"])))
    return cameras, config, msgs, draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_property_captures_are_consistent_and_bounded(scenario):
    cameras, config, msgs, polls = scenario
    sync = CaptureSync(cameras, **config)
    bound = config["max_pending"]
    seen, segments = set(), [[]]
    for arrival, kind, name, stamp, payload in msgs:
        add = sync.add_image if kind == "image" else sync.add_depth
        caps = add(name, stamp, payload)
        if polls:
            caps += sync.poll(stamp + 20 * MS)
        if sync.take_resets():
            segments.append([])
        segments[-1] += caps
        queued = sync.stats()["queued"]
        assert max(queued["images"].values()) <= bound and max(queued["depth"].values()) <= bound
        assert queued["captures"] <= bound
    for segment in segments:
        stamps = [c.stamp_ns for c in segment]
        assert stamps == sorted(set(stamps))  # strictly increasing within one timeline
        for cap in segment:
            assert isinstance(cap, Capture) and cap.images
            times = [t for t, _ in cap.images.values()]
            assert max(times) - min(times) <= config["slop_ns"]
            for cam, (t, payload) in cap.images.items():
                assert payload[0] == cam and payload not in seen
                seen.add(payload)
            for t, _ in cap.depth.values():
                assert abs(t - cap.stamp_ns) <= config["depth_tolerance_ns"]
            if config["on_silent"] == "wait":
                assert list(cap.images) == cameras
