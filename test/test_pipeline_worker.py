"""The Pipeline's threads: latest-wins queues, preparation beside inference, callbacks, failures,
stop and reset at any stage, time going backwards."""

import dataclasses
import threading
import time

import pytest

from mapanything_ros.backends import Backend, OracleBackend
from mapanything_ros.geometry import CameraModel
from mapanything_ros.pipeline import Pipeline, PipelineConfig
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
            assert pipeline.stats().pending <= 2 * CONFIG.queue_size  # before preparation, before the worker
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


def wait_for(condition):
    """Poll `condition` until it holds (a hang guard of WAIT_S, no time bound)."""
    end = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < end
        time.sleep(0.01)


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


def test_process_is_refused_while_the_threads_run(tiny_scene, captures):
    pipeline = Pipeline(CONFIG, OracleBackend(tiny_scene))
    with pipeline:
        with pytest.raises(RuntimeError, match="submit"):
            pipeline.process(captures[0])
    assert pipeline.stats().captures == 0  # refused before the window saw it
