"""The Pipeline's worker thread: latest-wins queue, callbacks, failures, stop, time going backwards."""

import time

import pytest

from mapanything_ros.backends import Backend, OracleBackend
from mapanything_ros.geometry import CameraModel
from mapanything_ros.pipeline import Pipeline, PipelineConfig
from mapanything_ros.synthetic import RigCamera, SyntheticScene, capture_frames, mount
from mapanything_ros.window import BatchConfig, KeyframePolicy

MS = 1_000_000
CONFIG = PipelineConfig(window_size=2, keyframes=KeyframePolicy(elapsed_s=0.0), batch=BatchConfig(long_side=56))


class Slow(Backend):
    """The oracle after a pause; fails on stamps in `fail`; records the reference stamps it saw."""

    def __init__(self, scene, pause_s=0.0, fail=()):
        self.oracle, self.pause_s, self.fail = OracleBackend(scene), pause_s, set(fail)
        self.seen = []

    def predict(self, batch):
        stamp = batch.frames[0].stamp_ns
        self.seen.append(stamp)
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
            assert pipeline.stats().pending <= CONFIG.queue_size
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


def test_stop_joins_while_a_job_runs(tiny_scene, captures):
    pipeline = Pipeline(CONFIG, Slow(tiny_scene, pause_s=0.3))
    results = []
    pipeline.on_result(results.append)
    pipeline.start()
    pipeline.submit(captures[0])
    while not pipeline.backend.seen:  # the first job is running
        time.sleep(0.01)
    pipeline.submit(captures[1])
    assert pipeline.stop(timeout=5)
    assert not pipeline._thread.is_alive()
    # the pending job is dropped, the running one ends after its inference, without a result
    assert pipeline.stats().dropped == 2 and results == []


def test_time_going_backwards_resets_the_window(tiny_scene, captures):
    pipeline = Pipeline(CONFIG, OracleBackend(tiny_scene))
    for capture in captures[5:8]:
        pipeline.submit(capture)
    submission = pipeline.submit(captures[0])
    assert submission.admitted and "time went backwards" in submission.reset
    stats = pipeline.stats()
    assert stats.window_resets == 1 and stats.reasons[-1].startswith("window: time went backwards")
    assert len(pipeline.window) == 1
