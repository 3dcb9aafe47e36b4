"""The Pipeline's threads: latest-wins queues, preparation beside inference, callbacks, failures,
stop and reset at any stage, time going backwards."""

import dataclasses
import threading
import time

import numpy as np
import pytest

from mapanything_ros.backends import Backend, OracleBackend
from mapanything_ros.geometry import CameraModel
from mapanything_ros.mapping import TsdfMap
from mapanything_ros.pipeline import MAP_QUEUE, Pipeline, PipelineConfig
from mapanything_ros.synthetic import RigCamera, SyntheticScene, capture_frames, mount
from mapanything_ros.window import BatchConfig, KeyframePolicy

MS = 1_000_000
CONFIG = PipelineConfig(window_size=2, keyframes=KeyframePolicy(elapsed_s=0.0), batch=BatchConfig(long_side=56))


WAIT_S = 30  # a hang guard, not a time bound


class Gate:
    """An Event that says when something reached it and waits there until opened."""

    def __init__(self):
        self.reached, self.opened = threading.Event(), threading.Event()

    def __call__(self):
        self.reached.set()
        assert self.opened.wait(WAIT_S)


def gated(frame, gate):
    """The frame with its image decoding deferred behind `gate` (decoded on preparation)."""
    def decode():
        gate()
        return frame.image
    return dataclasses.replace(frame, image=decode)


class Slow(Backend):
    """The oracle after a pause; fails on stamps in `fail`; records the reference stamps it saw."""

    def __init__(self, scene, pause_s=0.0, fail=(), gate=None):
        self.oracle, self.pause_s, self.fail, self.gate = OracleBackend(scene), pause_s, set(fail), gate
        self.seen = []

    def predict(self, batch):
        stamp = batch.frames[0].stamp_ns
        self.seen.append(stamp)
        if self.gate is not None and len(self.seen) == 1:
            self.gate()
        time.sleep(self.pause_s)
        if stamp in self.fail:
            raise RuntimeError(f"bad input at {stamp}")
        return self.oracle.predict(batch)


@pytest.fixture(scope="module")
def tiny_scene():
    cam = CameraModel.pinhole(40.0, 40.0, 27.5, 20.5, 56, 42)
    return SyntheticScene(cameras=[RigCamera("front_optical", cam, mount((0.15, 0.0, 0.1)))])


@pytest.fixture(scope="module")
def captures(tiny_scene):
    return [capture_frames(tiny_scene, 1000 * MS + k * 50 * MS, lidar=False) for k in range(12)]


def test_latest_wins(tiny_scene, captures):
    backend = Slow(tiny_scene, pause_s=0.1)
    pipeline = Pipeline(CONFIG, backend)
    results = []
    pipeline.on_result(results.append)
    with pipeline:
        seqs = []
        for capture in captures:
            seqs.append(pipeline.submit(capture).seq)
            assert pipeline.stats().pending <= 2 * CONFIG.queue_size + 1  # before preparation, the worker, publication
        assert pipeline.drain(timeout=10)
    stats = pipeline.stats()
    assert seqs == list(range(1, len(captures) + 1))
    assert stats.dropped > 0 and stats.done == len(results) == stats.keyframes - stats.dropped
    assert results[-1].seq == seqs[-1]  # the newest job is processed
    assert [r.seq for r in results] == sorted({r.seq for r in results})
    assert backend.seen[-1] == captures[-1][0].stamp_ns


def test_failure_is_counted_and_the_worker_carries_on(tiny_scene, captures):
    bad = captures[1][0].stamp_ns
    pipeline = Pipeline(CONFIG, Slow(tiny_scene, fail=[bad]))
    errors, results = [], []
    pipeline.on_error(lambda seq, err: errors.append((seq, err)))
    pipeline.on_result(results.append)
    with pipeline:
        for capture in captures[:3]:
            pipeline.submit(capture)
            assert pipeline.drain(timeout=10)
        assert pipeline._thread.is_alive()
    stats = pipeline.stats()
    assert stats.failed == 1 and stats.done == 2 and [r.seq for r in results] == [1, 3]
    assert errors[0][0] == 2 and "bad input" in str(errors[0][1])


class Poisoned(Slow):
    """The oracle, failing every window that holds a view stamped in `fail` (not only as the reference)."""

    def predict(self, batch):
        if {f.stamp_ns for f in batch.frames} & self.fail:
            if self.gate is not None:
                self.gate()
            raise RuntimeError("the backend cannot take this keyframe")
        return self.oracle.predict(batch)


@pytest.mark.parametrize("threads", [True, False])
def test_a_keyframe_whose_window_fails_leaves_the_window(tiny_scene, captures, threads):
    """It failed every window until it aged out of the window (here: windows 2 and 3 of 4)."""
    config = dataclasses.replace(CONFIG, window_size=3)
    pipeline = Pipeline(config, Poisoned(tiny_scene, fail=[captures[1][0].stamp_ns]))
    results = []
    pipeline.on_result(results.append)
    if threads:
        with pipeline:
            for capture in captures[:4]:
                pipeline.submit(capture)
                assert pipeline.drain(timeout=10)
    else:
        for capture in captures[:4]:
            pipeline.process(capture)
    stats = pipeline.stats()
    assert (stats.failed, stats.bad_frames, [r.seq for r in results]) == (1, 1, [1, 3, 4])
    assert [f.stamp_ns for f in results[-1].reconstruction.frames] == [captures[k][0].stamp_ns for k in (3, 0, 2)]


def test_a_keyframe_of_two_cameras_left_out_counts_once(tiny_scene):
    cam = tiny_scene.cameras[0].camera
    scene = SyntheticScene(cameras=[RigCamera("a", cam, mount((0.15, 0.0, 0.1))),
                                    RigCamera("b", cam, mount((-0.15, 0.0, 0.1)))])
    two = [capture_frames(scene, 1000 * MS + k * 50 * MS, lidar=False) for k in range(3)]
    pipeline = Pipeline(CONFIG, Poisoned(scene, fail=[two[1][0].stamp_ns]))
    for capture in two:
        pipeline.process(capture)
    assert (pipeline.stats().failed, pipeline.stats().bad_frames, pipeline.stats().done) == (1, 1, 2)


def test_a_capture_that_cannot_be_prepared_leaves_the_jobs_admitted_before_whole(tiny_scene):
    """One camera's image of a two-camera keyframe undecodable: a job admitted before kept the other
    camera's frame of that keyframe (a reviewer's finding)."""
    cam = tiny_scene.cameras[0].camera
    scene = SyntheticScene(cameras=[RigCamera("a", cam, mount((0.15, 0.0, 0.1))),
                                    RigCamera("b", cam, mount((-0.15, 0.0, 0.1)))])
    two = [capture_frames(scene, 1000 * MS + k * 50 * MS, lidar=False) for k in range(3)]
    gate = Gate()

    def undecodable():
        gate()
        raise ValueError("truncated jpeg")

    pipeline = Pipeline(dataclasses.replace(CONFIG, window_size=3), Slow(scene))
    results = []
    pipeline.on_result(results.append)
    with pipeline:
        pipeline.submit(two[0])
        assert pipeline.drain(timeout=WAIT_S)
        pipeline.submit([dataclasses.replace(two[1][0], image=undecodable), two[1][1]])
        assert gate.reached.wait(WAIT_S)
        pipeline.submit(two[2])  # admitted holding both frames of the keyframe about to fail
        gate.opened.set()
        assert pipeline.drain(timeout=WAIT_S)
    assert [r.seq for r in results] == [1, 3] and pipeline.stats().bad_frames == 1
    assert two[1][1].stamp_ns not in {f.stamp_ns for f in results[-1].reconstruction.frames}


def failing_second(tiny_scene, captures, gate):
    """A started pipeline (window_size 3) whose backend fails the windows holding captures[1], held at
    `gate` in the first of them; and the list its results go to."""
    pipeline = Pipeline(dataclasses.replace(CONFIG, window_size=3),
                        Poisoned(tiny_scene, fail=[captures[1][0].stamp_ns], gate=gate))
    results = []
    pipeline.on_result(results.append)
    pipeline.start()
    pipeline.submit(captures[0])
    assert pipeline.drain(timeout=WAIT_S)
    pipeline.submit(captures[1])
    assert gate.reached.wait(WAIT_S)
    return pipeline, results


def test_a_job_prepared_before_its_keyframe_left_the_window_is_prepared_again(tiny_scene, captures):
    """Prepared while the window holding its bad keyframe was inferred, and the newest: it is prepared
    again without the bad one and runs (it failed too, and its own new keyframe was left out with it)."""
    gate = Gate()
    pipeline, results = failing_second(tiny_scene, captures, gate)
    with pipeline:
        pipeline.submit(captures[2])
        wait_for(lambda: pipeline._queue)  # prepared, holding the bad keyframe
        gate.opened.set()
        assert pipeline.drain(timeout=WAIT_S)
        pipeline.submit(captures[3])
        assert pipeline.drain(timeout=WAIT_S)
    stats = pipeline.stats()
    assert (stats.failed, stats.bad_frames, stats.dropped, [r.seq for r in results]) == (1, 1, 0, [1, 3, 4])
    stamps = [[f.stamp_ns for f in r.reconstruction.frames] for r in results[1:]]
    assert stamps == [[captures[k][0].stamp_ns for k in ks] for ks in ((2, 0), (3, 0, 2))]


def test_an_older_job_holding_a_left_out_keyframe_gives_way_to_a_newer_one(tiny_scene, captures):
    """Job 3 prepared holding the bad keyframe while job 4 is prepared without it: job 3 was put back to
    be prepared again and ran after job 4 (results out of order; a reviewer's finding); now latest wins."""
    failing, third, fourth = Gate(), Gate(), Gate()
    pipeline, results = failing_second(tiny_scene, captures, failing)  # job 2 inferred, about to fail
    with pipeline:
        pipeline.submit([gated(f, third) for f in captures[2]])
        assert third.reached.wait(WAIT_S)  # job 3 being prepared, the bad keyframe in it
        pipeline.submit([gated(f, fourth) for f in captures[3]])
        failing.opened.set()
        wait_for(lambda: pipeline.stats().failed == 1)  # the bad keyframe left out
        third.opened.set()
        assert fourth.reached.wait(WAIT_S)  # job 4 being prepared without it
        wait_for(lambda: pipeline.stats().dropped == 1)  # job 3 gave way
        fourth.opened.set()
        assert pipeline.drain(timeout=WAIT_S)
    assert [r.seq for r in results] == [1, 4] and pipeline.stats().bad_frames == 1


def test_a_failure_caused_by_a_keyframe_that_ran_does_not_stall_the_window(tiny_scene, captures):
    """reference oldest, failing while a keyframe that ran before is the reference: the new keyframe
    is blamed once, then the window slides until the cause leaves (a reviewer's finding: every new
    keyframe was blamed, the window never slid, nothing ran again)."""
    config = dataclasses.replace(CONFIG, window_size=3, reference="oldest")
    pipeline = Pipeline(config, Slow(tiny_scene, fail=[captures[1][0].stamp_ns]))
    results = []
    pipeline.on_result(results.append)
    for capture in captures:
        pipeline.process(capture)
    stats = pipeline.stats()
    assert (stats.failed, stats.bad_frames) == (2, 1)
    assert [r.seq for r in results] == [1, 2, 3, *range(6, len(captures) + 1)]


def test_what_was_left_out_is_forgotten_with_the_window(tiny_scene, captures):
    """A bag loop brings the same keys again: a keyframe left out before the window was emptied is used."""
    backend = Poisoned(tiny_scene, fail=[captures[1][0].stamp_ns])
    pipeline = Pipeline(CONFIG, backend)
    results = []
    pipeline.on_result(results.append)
    for capture in captures[:2]:
        pipeline.process(capture)
    assert pipeline.stats().bad_frames == 1
    pipeline.restart_window("the clock jumped back")
    backend.fail.clear()
    pipeline.process(captures[1])
    assert [f.stamp_ns for f in results[-1].reconstruction.frames] == [captures[1][0].stamp_ns]


def wait_for(condition):
    """Poll `condition` until it holds (a hang guard of WAIT_S, no time bound)."""
    end = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < end
        time.sleep(0.01)


def published(pipeline, n):
    """Whether n windows are published and their keyframes handed to the map (the publish thread idle)."""
    return pipeline.stats().done == n and not pipeline._results and not pipeline._publishing


def stop_while_held(pipeline, gate):
    """stop() from another thread while `gate` holds a thread of the pipeline, then open the gate:
    stop() must return and every thread end."""
    stopper = threading.Thread(target=pipeline.stop)
    stopper.start()
    wait_for(lambda: pipeline._stopping)
    gate.opened.set()
    stopper.join(WAIT_S)
    assert not stopper.is_alive() and not any(t.is_alive() for t in pipeline._threads())


def test_stop_joins_while_a_job_runs(tiny_scene, captures):
    inference = Gate()
    pipeline = Pipeline(CONFIG, Slow(tiny_scene, gate=inference))
    results = []
    pipeline.on_result(results.append)
    pipeline.start()
    pipeline.submit(captures[0])
    assert inference.reached.wait(WAIT_S)  # the first job is in inference, held there
    pipeline.submit(captures[1])
    wait_for(lambda: pipeline._queue)  # prepared, waiting for the worker
    stop_while_held(pipeline, inference)
    # the pending job is dropped, the running one ends after its inference, without a result
    assert pipeline.stats().dropped == 2 and pipeline.stats().pending == 0 and results == []


def test_time_going_backwards_resets_the_window(tiny_scene, captures):
    pipeline = Pipeline(CONFIG, OracleBackend(tiny_scene))
    for capture in captures[5:8]:
        pipeline.submit(capture)
    submission = pipeline.submit(captures[0])
    assert submission.admitted and "time went backwards" in submission.reset
    stats = pipeline.stats()
    assert stats.window_resets == 1 and stats.reasons[-1].startswith("window: time went backwards")
    assert len(pipeline.window) == 1


@pytest.mark.parametrize("how", ["capture", "clock"])
def test_a_window_in_flight_when_time_goes_backwards_is_dropped(tiny_scene, captures, how):
    """A window inferred while a capture stamped earlier comes in (a bag loop), or the node's
    clock jumps back (restart_window): it is of the old timeline (stamped ahead of the new clock:
    its TF would make the new one's look old to tf2), so it is dropped like one in flight at a
    reset; the new one goes out."""
    inferring = Gate()
    backend = Slow(tiny_scene, gate=inferring)
    pipeline = Pipeline(CONFIG, backend)
    results = []
    pipeline.on_result(results.append)
    pipeline.start()
    pipeline.submit(captures[8])
    assert inferring.reached.wait(WAIT_S)
    if how == "clock":
        pipeline.restart_window("the node's clock jumped back by 1.000 s")
        assert pipeline.submit(captures[0]).reset is None and pipeline.stats().window_resets == 1
    else:
        assert "time went backwards" in pipeline.submit(captures[0]).reset
    inferring.opened.set()
    assert pipeline.drain(timeout=WAIT_S) and pipeline.stop(timeout=WAIT_S)
    assert [r.stamp_ns for r in results] == [captures[0][0].stamp_ns] and pipeline.stats().dropped == 1


@pytest.mark.parametrize("how", ["capture", "clock"])
def test_a_window_waiting_for_the_publish_thread_when_time_goes_backwards_is_dropped(tiny_scene, captures, how):
    """The same for a window inferred and queued while the publish thread is busy with the
    previous one (a reviewer's finding: only reset() emptied that queue)."""
    pipeline = Pipeline(CONFIG, Slow(tiny_scene))
    publishing = Gate()
    results = []

    def on_result(result):
        results.append(result.stamp_ns)
        if len(results) == 1:
            publishing()

    pipeline.on_result(on_result)
    pipeline.start()
    pipeline.submit(captures[8])
    assert publishing.reached.wait(WAIT_S)
    pipeline.submit(captures[9])
    end = time.monotonic() + WAIT_S
    while not pipeline._results and time.monotonic() < end:  # inferred, waiting for the publish thread
        time.sleep(0.01)
    assert pipeline._results
    if how == "clock":
        pipeline.restart_window("the node's clock jumped back by 1.000 s")
        pipeline.submit(captures[0])
    else:
        assert "time went backwards" in pipeline.submit(captures[0]).reset
    publishing.opened.set()
    assert pipeline.drain(timeout=WAIT_S) and pipeline.stop(timeout=WAIT_S)
    assert results == [captures[8][0].stamp_ns, captures[0][0].stamp_ns] and pipeline.stats().dropped == 1


def test_the_next_keyframe_is_prepared_while_the_worker_infers(tiny_scene, captures):
    inference, decoding = Gate(), Gate()
    decoding.opened.set()
    backend = Slow(tiny_scene, gate=inference)
    pipeline = Pipeline(CONFIG, backend)
    results = []
    pipeline.on_result(results.append)
    with pipeline:
        pipeline.submit(captures[0])
        assert inference.reached.wait(WAIT_S)  # the first window is in inference, held there
        pipeline.submit([gated(f, decoding) for f in captures[1]])
        assert decoding.reached.wait(WAIT_S)  # the next keyframe is decoded and prepared meanwhile
        assert backend.seen == [captures[0][0].stamp_ns]
        wait_for(lambda: pipeline._queue)  # and waits for the worker, prepared
        assert pipeline._queue[0].prepared is not None
        inference.opened.set()
        assert pipeline.drain(timeout=WAIT_S)
    assert [r.seq for r in results] == [1, 2]
    stats = pipeline.stats()
    assert stats.done == stats.keyframes == 2 and stats.dropped == stats.failed == 0
    assert stats.latency["prepare"]["count"] == 2


@pytest.mark.parametrize("how", ["stop", "reset"])
def test_a_job_stopped_or_reset_during_preparation_is_dropped(tiny_scene, captures, how):
    decoding = Gate()
    backend = Slow(tiny_scene)
    pipeline = Pipeline(CONFIG, backend)
    results, errors = [], []
    pipeline.on_result(results.append)
    pipeline.on_error(lambda seq, err: errors.append(err))
    pipeline.start()
    pipeline.submit([gated(f, decoding) for f in captures[0]])
    assert decoding.reached.wait(WAIT_S)
    if how == "stop":
        stop_while_held(pipeline, decoding)
    else:
        pipeline.reset()
        decoding.opened.set()
        assert pipeline.drain(timeout=WAIT_S)
        pipeline.submit(captures[1])  # the threads go on after a reset
        assert pipeline.drain(timeout=WAIT_S)
        assert pipeline.stop(timeout=WAIT_S)
    stats = pipeline.stats()  # the stale job neither queued for the worker nor inferred
    assert stats.pending == 0
    assert backend.seen == ([] if how == "stop" else [captures[1][0].stamp_ns]) and errors == []
    assert [r.seq for r in results] == ([] if how == "stop" else [2])
    assert stats.dropped == 1 and stats.keyframes == stats.done + stats.dropped


def test_a_frame_that_cannot_be_prepared_fails_its_job_on_the_prepare_thread(tiny_scene, captures):
    def broken():
        raise ValueError("truncated jpeg")

    backend = Slow(tiny_scene)
    pipeline = Pipeline(CONFIG, backend)
    results, errors = [], []
    pipeline.on_result(results.append)
    pipeline.on_error(lambda seq, err: errors.append((seq, str(err), threading.current_thread().name)))
    with pipeline:
        for capture in (captures[0], [dataclasses.replace(captures[1][0], image=broken)], captures[2]):
            pipeline.submit(capture)
            assert pipeline.drain(timeout=WAIT_S)
        assert all(t.is_alive() for t in pipeline._threads())
    stats = pipeline.stats()
    assert [seq for seq, _, _ in errors] == [2] and "truncated jpeg" in errors[0][1]
    assert errors[0][2] == "mapanything-prepare" and captures[1][0].stamp_ns not in backend.seen
    assert stats.failed == stats.bad_frames == 1 and [r.seq for r in results] == [1, 3]
    assert {f.stamp_ns for f in results[-1].reconstruction.frames} == {captures[0][0].stamp_ns, captures[2][0].stamp_ns}


def test_process_is_refused_while_the_threads_run_and_runs_after_stop(tiny_scene, captures):
    """One path at a time: process() is refused while the threads run; after stop() it runs
    windows offline (their results and map), and start() brings the threads back."""
    pipeline = Pipeline(CONFIG, OracleBackend(tiny_scene))
    results = []
    pipeline.on_result(lambda result: results.append(result.seq))
    with pipeline:
        with pytest.raises(RuntimeError, match="submit"):
            pipeline.process(captures[0])
        assert pipeline.stats().captures == 0  # refused before the window saw it
        pipeline.submit(captures[0])
        assert pipeline.drain(timeout=WAIT_S)
    _, result = pipeline.process(captures[1])
    assert result is not None and result.seq == 2 and results == [1, 2]
    assert pipeline.stats().map_keyframes == 2 and pipeline.stats().dropped == 0
    with pipeline:
        pipeline.submit(captures[2])
        assert pipeline.drain(timeout=WAIT_S)
    assert results == [1, 2, 3] and pipeline.stats().map_keyframes == 3


def test_the_next_window_is_inferred_while_the_previous_one_is_published(tiny_scene, captures):
    """The publish thread makes a window's outputs (the result callbacks, in order, on a thread of
    their own) while the worker infers the next window; drain() waits for both."""
    publishing = Gate()
    backend = Slow(tiny_scene)
    pipeline = Pipeline(CONFIG, backend)
    results = []

    def outputs(result):
        if result.seq == 1:
            publishing()
        results.append((result.seq, threading.current_thread().name))

    pipeline.on_result(outputs)
    with pipeline:
        pipeline.submit(captures[0])
        assert publishing.reached.wait(WAIT_S)  # window 1's outputs held
        pipeline.submit(captures[1])
        wait_for(lambda: len(backend.seen) == 2)  # window 2 inferred meanwhile
        assert not pipeline.drain(timeout=0.1) and results == []
        publishing.opened.set()
        assert pipeline.drain(timeout=WAIT_S)
    stats = pipeline.stats()
    assert results == [(1, "mapanything-publish"), (2, "mapanything-publish")]
    assert stats.inferred == stats.done == 2 and stats.dropped == 0 and stats.map_keyframes == 2


def test_every_inferred_window_is_published_in_order(tiny_scene, captures):
    """Outputs slower than inference: the worker takes no job while a result waits for the publish
    thread, so every window it infers is published, once, in order; jobs wait in the latest-wins
    queues instead (dropped there when newer ones come)."""
    pipeline = Pipeline(CONFIG, Slow(tiny_scene))
    results = []

    def slow_outputs(result):
        time.sleep(0.05)
        results.append(result.seq)

    pipeline.on_result(slow_outputs)
    with pipeline:
        for k, capture in enumerate(captures, 1):
            pipeline.submit(capture)
            assert len(pipeline._results) <= 1
            if k % 3 == 0:  # now and then, until the job is inferred or dropped
                wait_for(lambda: pipeline.stats().inferred + pipeline.stats().dropped >= k)
        assert pipeline.drain(timeout=WAIT_S)
    stats = pipeline.stats()
    assert results == sorted(set(results)) and results[-1] == len(captures)
    assert stats.inferred == stats.done == len(results) >= 4 and stats.failed == 0
    assert stats.inferred + stats.dropped == len(captures)


def test_a_window_made_before_a_clearing_sends_nothing_to_the_map(tiny_scene, captures):
    """Window 1 (world frame, poses given) is still being published when the worker's window 2
    (its newest capture without a pose: the chain frame) clears the map for the new frame: window
    1's keyframe must not reach the map after the clearing (it would be in the old frame); window 2
    sends both keyframes, in the chain frame."""
    publishing = Gate()
    pipeline = Pipeline(CONFIG, Slow(tiny_scene))
    sent = []
    send = pipeline._send
    pipeline._send = lambda item: (sent.append((item.pose_frame, item.indices)), send(item))[1]
    pipeline.on_result(lambda result: publishing() if result.seq == 1 else None)
    unposed = [dataclasses.replace(f, world_from_camera=None) for f in captures[1]]
    with pipeline:
        pipeline.submit(captures[0])
        assert publishing.reached.wait(WAIT_S)
        pipeline.submit(unposed)
        wait_for(lambda: pipeline.stats().map_resets == 1)  # decided by window 2, on the worker
        publishing.opened.set()
        assert pipeline.drain(timeout=WAIT_S)
    assert sent[0] == (None, ()) and len(sent) == 2  # the clearing, then window 2 alone
    assert sent[1][0] != "world" and sent[1][1] == (0, 1)
    assert pipeline.stats().map_keyframes == 2 and pipeline.map_points().pose_frame == sent[1][0]


@pytest.mark.parametrize("how", ["stop", "reset"])
def test_windows_waiting_for_the_publish_thread_at_stop_or_reset(tiny_scene, captures, how):
    """While a window's outputs are being made, the next window waits in the publish queue and the
    job after it in the worker's queue: the worker takes no job while a result waits (the job it
    infers next is then the freshest). stop(): the outputs end, both waiting windows are dropped
    (counted), every thread ends. reset(): both are dropped, the pipeline goes on."""
    publishing = Gate()
    backend = Slow(tiny_scene)
    pipeline = Pipeline(CONFIG, backend)
    results = []
    pipeline.on_result(lambda result: (publishing() if result.seq == 1 else None, results.append(result.seq)))
    pipeline.start()
    pipeline.submit(captures[0])
    assert publishing.reached.wait(WAIT_S)
    pipeline.submit(captures[1])
    wait_for(lambda: len(pipeline._results) == 1)  # window 2 made, queued behind window 1
    pipeline.submit(captures[2])
    wait_for(lambda: len(pipeline._queue) == 1)  # job 3 prepared, for the worker
    assert pipeline.stats().pending == 2  # window 2 for the publish thread, job 3 for the worker
    for _ in range(50):  # an observation window: the worker leaves job 3 be
        assert len(backend.seen) == 2 and len(pipeline._results) == 1
        time.sleep(0.01)
    if how == "stop":
        stop_while_held(pipeline, publishing)
        assert results == [1] and pipeline.stats().dropped == 2 and not pipeline._results
        return
    pipeline.reset()
    assert not pipeline._results and not pipeline._queue and pipeline.stats().dropped == 2
    publishing.opened.set()
    pipeline.submit(captures[5])
    assert pipeline.drain(timeout=WAIT_S)
    pipeline.stop()
    assert results == [1, 4] and pipeline.stats().dropped == 2


@pytest.mark.parametrize("how", ["queued", "publishing", "timed_out", "timed_out_then_start", "timed_out_then_flush",
                                 "timed_out_then_load"])
def test_map_work_at_stop(tiny_scene, captures, how):
    """Window 1 (world frame) is held in fusion; window 2 (the chain frame) clears the map for its
    frame. stop() comes with window 2's fusion queued, or while window 2's outputs are made (its
    fusion sent during stop()), or returns before the held fusion ends (a timeout). Window 2's
    fusion is dropped (counted) and its keyframes enter with a later window; the clearing is applied
    once the threads have ended (by stop(), or by process() or start() after a stop() that timed
    out, or by the first map work after it: flush_map()), so the map never keeps the frame the
    pipeline left; window 3 then sends its two keyframes. A map loaded after the timed-out stop()
    replaces the clearing: it is kept, and mapped on."""
    fusing, publishing = Gate(), Gate()
    pipeline = Pipeline(CONFIG, Slow(tiny_scene))
    integrate = pipeline.map.integrate
    pipeline.map.integrate = lambda view: (fusing(), integrate(view))[1]
    applied = []  # each map item that changed the map: its keyframe count, None for a clearing

    def apply(item, apply=pipeline._apply):
        version = pipeline.map_version
        apply(item)
        if pipeline.map_version != version:
            applied.append(None if item.recon is None else len(item.indices))

    pipeline._apply = apply
    if how == "publishing":
        pipeline.on_result(lambda result: publishing() if result.seq == 2 else None)
    unposed = [[dataclasses.replace(f, world_from_camera=None) for f in c] for c in captures[1:3]]
    pipeline.start()
    pipeline.submit(captures[0])
    assert fusing.reached.wait(WAIT_S)
    pipeline.submit(unposed[0])
    if how == "publishing":
        assert publishing.reached.wait(WAIT_S)  # the clearing queued before, by the worker
        stopper = threading.Thread(target=pipeline.stop)
        stopper.start()
        wait_for(lambda: pipeline._stopping)
        publishing.opened.set()
        pipeline._publish_thread.join(WAIT_S)  # window 2's fusion sent while stopping
        fusing.opened.set()
        stopper.join(WAIT_S)
        assert not stopper.is_alive()
    else:
        wait_for(lambda: published(pipeline, 2))  # the clearing and window 2's fusion queued
        if how == "queued":
            stop_while_held(pipeline, fusing)
        else:
            assert not pipeline.stop(timeout=0.01)
            fusing.opened.set()
            for thread in pipeline._threads():
                thread.join(WAIT_S)
            assert applied == [1]  # the clearing waits for start(), process() or flush_map()
            if how == "timed_out_then_flush":  # window 2's keyframes, dropped at stop(), into the cleared map
                assert pipeline.flush_map() == 2 and applied == [1, None, 2]
                assert pipeline.map_points().pose_frame == "chain"
                return
            if how == "timed_out_then_load":
                pipeline.load_map(pipeline.map_state()[0])  # window 1's world-frame map
                pipeline.process(captures[2])
                assert applied == [1, 2] and pipeline.map_points().pose_frame == "world"
                return
    assert not any(t.is_alive() for t in pipeline._threads())
    stats = pipeline.stats()
    assert (stats.map_dropped, stats.map_keyframes, stats.map_resets) == (2, 1, 1)
    if how == "timed_out_then_start":
        with pipeline:
            assert applied == [1, None]
            pipeline.submit(unposed[1])
            assert pipeline.drain(timeout=WAIT_S)
    else:
        assert applied == ([1] if how == "timed_out" else [1, None])
        pipeline.process(unposed[1])
    assert applied == [1, None, 2] and pipeline.stats().map_keyframes == 3
    assert pipeline.map_points().pose_frame == "chain"


def test_a_window_published_after_a_reset_sends_nothing_to_the_map(tiny_scene, captures):
    """reset() while a window's outputs are being made: its outputs end, but its keyframes (from
    before the reset) do not enter the map the reset emptied."""
    publishing = Gate()
    pipeline = Pipeline(CONFIG, Slow(tiny_scene))
    pipeline.on_result(lambda result: publishing())
    with pipeline:
        pipeline.submit(captures[0])
        assert publishing.reached.wait(WAIT_S)
        pipeline.reset()
        publishing.opened.set()
        assert pipeline.drain(timeout=WAIT_S)
    assert pipeline.stats().done == 1 and pipeline.stats().map_keyframes == 0 and len(pipeline.map) == 0


@pytest.mark.parametrize("cleared", [False, True])
def test_a_dropped_fusion_lets_its_keyframes_enter_once(tiny_scene, captures, cleared):
    """The map thread held while windows queue their keyframes. Without a clearing, the full map
    queue drops window 2's keyframe (counted), which (still in the window) enters with the next
    window. With a clearing (window 3, the chain frame: it sends window 2's keyframe again), the
    clearing replaces the world-frame fusion waiting before it (nothing is lost: not counted), and
    the keyframe enters the cleared map once. Either way every keyframe reaches the map exactly
    once after the last clearing."""
    fusing = Gate()
    pipeline = Pipeline(dataclasses.replace(CONFIG, window_size=12), Slow(tiny_scene))
    integrate = pipeline.map.integrate
    pipeline.map.integrate = lambda view: (fusing(), integrate(view))[1]
    fused = []  # the keyframes of each map item applied: None for a clearing
    apply = pipeline._apply
    pipeline._apply = lambda item: (fused.append(None if item.recon is None else
                                                 [item.recon.frames[i].key for i in item.indices]), apply(item))[1]
    later = [[dataclasses.replace(f, world_from_camera=None) for f in c] for c in captures[2:]] if cleared \
        else captures[2:]
    with pipeline:
        queued = MAP_QUEUE - 1 if cleared else MAP_QUEUE  # windows after window 2 (the clearing is queued too)
        for n, capture in enumerate(captures[:2] + later[:queued], start=1):
            pipeline.submit(capture)
            wait_for(lambda: published(pipeline, n))
            if n == 1:
                assert fusing.reached.wait(WAIT_S)  # window 1's fusion held: the rest queue behind it
        assert pipeline.stats().map_dropped == (0 if cleared else 1)  # replaced by the clearing: nothing lost
        fusing.opened.set()
        assert pipeline.drain(timeout=WAIT_S)
        pipeline.submit(later[queued])
        assert pipeline.drain(timeout=WAIT_S)
    keys = [k for item in (fused[fused.index(None) + 1:] if cleared else fused) for k in item]
    assert len(keys) == len(set(keys)) == (10 if cleared else 11)
    assert pipeline.stats().map_keyframes == 11


@pytest.mark.parametrize("output", ["map_points", "occupancy"])
def test_map_outputs_search_a_copy_away_from_the_map_lock(tiny_scene, captures, output, monkeypatch):
    """map_points() and occupancy() search a copy of the map taken under the map lock: while the
    search runs the lock is free (fusion goes on), and the map keeps what the copy found."""
    pipeline = Pipeline(CONFIG, OracleBackend(tiny_scene))
    pipeline.process(captures[0])
    searching = Gate()
    name = "surface" if output == "map_points" else "occupancy"
    search = getattr(TsdfMap, name)

    def held(volume, *args):
        if volume is not pipeline.map:  # the copy
            searching()
        return search(volume, *args)

    monkeypatch.setattr(TsdfMap, name, held)
    found = []
    args = () if output == "map_points" else (-1.0, 3.0)
    caller = threading.Thread(target=lambda: found.append(getattr(pipeline, output)(*args)))
    caller.start()
    assert searching.reached.wait(WAIT_S)
    assert pipeline._map_lock.acquire(blocking=False)  # free meanwhile
    pipeline._map_lock.release()
    searching.opened.set()
    caller.join(WAIT_S)
    assert found and (pipeline.map._surface if output == "map_points" else pipeline.map._columns) is not None


def test_occupancy_of_a_chain_frame_map_is_none_without_a_copy(tiny_scene, captures, monkeypatch):
    """A map in the image-only chain frame has no height band: occupancy() gives no grid, and does
    not copy the map to find that out."""
    pipeline = Pipeline(CONFIG, OracleBackend(tiny_scene))
    pipeline.process([dataclasses.replace(f, world_from_camera=None) for f in captures[0]])
    monkeypatch.setattr(TsdfMap, "copy", lambda volume: pytest.fail("copied"))
    grid, frame, _ = pipeline.occupancy(-1.0, 3.0)
    assert grid is None and frame == "chain"


def test_flush_map_after_stop_fuses(tiny_scene, captures):
    """flush_map() at the end of a run, after stop(): the newest window's keyframes that map_insert
    "oldest" left out enter the map (the threads have ended: fused now, not dropped)."""
    pipeline = Pipeline(dataclasses.replace(CONFIG, map_insert="oldest"), Slow(tiny_scene))
    with pipeline:
        for n, capture in enumerate(captures[:3], start=1):
            pipeline.submit(capture)
            wait_for(lambda: published(pipeline, n))
        assert pipeline.drain(timeout=WAIT_S)
    fused = pipeline.stats().map_keyframes
    assert pipeline.flush_map() == 1  # window 3's newest keyframe
    assert pipeline.stats().map_keyframes == fused + 1 and pipeline.stats().map_dropped == 0


def test_a_fusion_waiting_for_the_map_lock_skips_a_map_loaded_meanwhile(tiny_scene, captures):
    """A fusion the map thread took but could not apply yet (the map lock held) is of the old map
    when a map is loaded meanwhile: it is skipped, the loaded map stays as loaded."""
    pipeline = Pipeline(CONFIG, Slow(tiny_scene))
    with pipeline:
        pipeline.submit(captures[0])
        assert pipeline.drain(timeout=WAIT_S)
        state = pipeline.map_state()[0]
        with pipeline._map_lock:  # then the chain lock (load_map): safe here, no thread holds it waiting for this one
            pipeline.submit(captures[1])
            wait_for(lambda: pipeline._map_busy and not pipeline._map_items)  # taken, waiting for the lock
            pipeline.load_map(state)
        assert pipeline.drain(timeout=WAIT_S)
    assert pipeline.stats().map_keyframes == 1
    for name, loaded in state.items():
        if name not in ("pose_frame", "stamp_ns"):
            np.testing.assert_array_equal(pipeline.map.state()[name], loaded)
