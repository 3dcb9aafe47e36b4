"""Pipeline: the ROS-free orchestrator. Captures in, reconstructions and a global map out.

Two paths share every step (`_run`):
- live: `submit(frames)` from the ingestion thread (ROS callbacks, replay) only offers the
  capture to the Window, which is cheap; when a new keyframe is admitted, a snapshot of the
  window's views becomes a job on a bounded queue (latest wins: when it is full the oldest
  pending job is dropped and counted). A worker thread (`start`/`stop`, or `with pipeline:`)
  takes jobs one at a time: ViewBatch assembly, the backend, reconstruction, chaining, map
  insertion, then the result callbacks. An exception anywhere in a job (also in a result
  callback) is caught, counted, logged (at most once per LOG_INTERVAL_S) and passed to the
  error callbacks; the worker carries on with the next job.
- offline: `process(frames)` does the same synchronously and returns the Result.
Use one path per pipeline.

Frames of the map. A window whose reference pose is known (use_poses and poses given) is
reconstructed in the world frame and inserted as it is. Otherwise (image-only) each window is in
its own reference camera frame, and mapping.WindowChain carries it into one chain frame first.
The map holds one frame only, so it is cleared (and the clearing counted, with its reason) when
the chain starts a new segment, when the window is reset (time went backwards) in image-only
mode, and when the windows switch between world and chain frames.

Counters (stats()): captures offered, keyframes admitted, jobs dropped (queue full, or pending
at stop()/reset()), jobs inferred (backend returned), jobs done (result delivered), jobs
failed, window resets (time going backwards) and map resets, with the last reasons; per-stage
latencies in seconds (p50, p95, max over the last `stats_window` jobs that ran the stage).
"""

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .mapping import VoxelMap, WindowChain, reconstruct
from .window import BatchConfig, KeyframePolicy, Window, assemble

log = logging.getLogger(__name__)
STAGES = ("assembly", "inference", "reconstruction", "chaining", "map", "total")
LOG_INTERVAL_S = 10.0  # failures are logged at most this often (each log line says how many)
REASONS_KEPT = 20


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline does, in one place.

    window_size: keyframes per window (N captures, each of all cameras); keyframes: the
    admission thresholds; reference: the window's reference rule ("newest" or "oldest", see
    window.Window); batch: which inputs the model gets and at what resolution; depth_mode,
    edge_threshold, keep_measured, align_to_measured: see mapping.reconstruct; voxel_size (m),
    max_voxels, min_confidence, max_distance (m or None): see mapping.VoxelMap; queue_size:
    pending jobs kept (1: only the latest); stats_window: jobs over which latencies are summarised.
    """

    window_size: int = 8
    keyframes: KeyframePolicy = field(default_factory=KeyframePolicy)
    reference: str = "newest"
    batch: BatchConfig = field(default_factory=BatchConfig)
    depth_mode: str = "bilinear"
    edge_threshold: float | None = 0.05
    keep_measured: bool = False
    align_to_measured: bool = False
    voxel_size: float = 0.05
    max_voxels: int = 2_000_000
    min_confidence: float = 0.0
    max_distance: float | None = None
    queue_size: int = 1
    stats_window: int = 100


@dataclass(frozen=True)
class Submission:
    """What submit/process did with a capture: admitted (a new keyframe), reason, reset (why the
    window was cleared first, or None), seq (the job's window sequence number, None if not admitted)."""

    admitted: bool
    reason: str
    reset: str | None
    seq: int | None


@dataclass(frozen=True, eq=False)
class Result:
    """One window's outcome.

    seq: window sequence number (1, 2, ... per admitted keyframe; gaps are dropped jobs);
    reconstruction: the mapping.Reconstruction as inserted into the map (pose_frame "world", or
    the chain frame in image-only mode); chain: the mapping.ChainResult, or None when poses were
    known; inserted: points the map accepted; map_reset: why the map was cleared before this
    window's points went in, or None; timings: seconds per stage that ran (see STAGES).
    """

    seq: int
    reconstruction: object
    chain: object
    inserted: int
    map_reset: str | None
    timings: dict


@dataclass(frozen=True)
class Stats:
    """A snapshot of the counters (see the module doc). latency: stage -> {"p50", "p95", "max",
    "count"} seconds over the recent jobs that ran the stage; reasons: the last window and map resets."""

    captures: int
    keyframes: int
    dropped: int
    inferred: int
    done: int
    failed: int
    window_resets: int
    map_resets: int
    pending: int
    map_voxels: int
    reasons: tuple
    latency: dict


@dataclass(frozen=True, eq=False)
class _Job:
    seq: int
    frames: tuple
    epoch: int  # window epoch (changes at window resets and at reset())
    submitted: float  # time.perf_counter()


COUNTERS = ("captures", "keyframes", "dropped", "inferred", "done", "failed", "window_resets", "map_resets")


class Pipeline:
    """Frames in, Results out; `backend` is a backends.Backend. See the module doc."""

    def __init__(self, config=PipelineConfig(), backend=None):
        if backend is None:
            raise ValueError("a backend is needed (backends.MapAnythingBackend, OracleBackend, ...)")
        if config.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {config.queue_size}")
        self.config = config
        self.backend = backend
        self.window = Window(config.window_size, config.keyframes, config.reference)
        self.chain = WindowChain()
        self._map = VoxelMap(config.voxel_size, config.max_voxels, config.min_confidence, config.max_distance)
        self._lock = threading.Lock()  # window, queue, counters, epochs; taken after _map_lock, never before
        self._wake = threading.Condition(self._lock)
        self._map_lock = threading.RLock()  # chain and map
        self._queue = deque()
        self._busy = False
        self._thread = None
        self._stopping = False
        self._on_result, self._on_error = [], []
        self._seq = 0
        self._epoch = 0  # window epoch of new jobs
        self._cleared_epoch = 0  # jobs older than this were made before reset(): discarded
        self._map_epoch = None  # window epoch and pose frame of the windows in the map
        self._map_pose_frame = None
        self._last_log = -np.inf
        self._zero_counters()

    # ---------------------------------------------------------------- ingestion

    def submit(self, frames):
        """Offer a capture (a Frame or Frames of one stamp) without waiting for inference; returns a Submission."""
        submission, job = self._admit(frames)
        if job is not None:
            with self._wake:
                if len(self._queue) >= self.config.queue_size:
                    self._queue.popleft()
                    self._counts["dropped"] += 1
                self._queue.append(job)
                self._wake.notify()
        return submission

    def process(self, frames):
        """Offer a capture and, if it is a new keyframe, run its window now (offline path).

        Returns (Submission, Result or None); None when not admitted or when the job failed
        (counted and reported to the error callbacks like on the worker).
        """
        submission, job = self._admit(frames)
        return submission, (None if job is None else self._execute(job))

    def on_result(self, callback):
        """Call callback(Result) for every finished window (on the worker thread, or in process())."""
        self._on_result.append(callback)

    def on_error(self, callback):
        """Call callback(seq, exception) for every failed window."""
        self._on_error.append(callback)

    # ---------------------------------------------------------------- worker

    def start(self):
        """Start the worker thread (no-op if running)."""
        with self._wake:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._work, name="mapanything-pipeline", daemon=True)
            self._thread.start()

    def stop(self, timeout=None):
        """Stop the worker: the job running finishes, pending jobs are dropped (counted). Returns
        True when the thread ended within `timeout` seconds (None: wait)."""
        with self._wake:
            self._stopping = True
            self._counts["dropped"] += len(self._queue)
            self._queue.clear()
            self._wake.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def drain(self, timeout=None):
        """Wait until no job is pending or running; True if so within `timeout` seconds."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._queue and not self._busy, timeout)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---------------------------------------------------------------- state

    @property
    def map(self):
        """The mapping.VoxelMap. The worker writes it: read it through map_points() while running."""
        return self._map

    def map_points(self):
        """A consistent snapshot of the map: (xyz (M, 3) float32 m, rgb (M, 3) uint8, confidence (M,))."""
        with self._map_lock:
            return self._map.points()

    def save_map(self, path):
        """Write the map to a PLY file; returns the number of points."""
        with self._map_lock:
            return self._map.save_ply(path)

    def reset(self, counters=False):
        """Start over: clear the window, pending jobs (counted as dropped), the chain and the map;
        a job running now is discarded. Counters and latencies are kept unless `counters`."""
        with self._map_lock, self._wake:
            self.window.clear()
            self._counts["dropped"] += len(self._queue)
            self._queue.clear()
            self._epoch += 1
            self._cleared_epoch = self._epoch
            self.chain.reset()
            self._map.reset()
            self._map_epoch = self._map_pose_frame = None
            if counters:
                self._zero_counters()

    def stats(self):
        """A Stats snapshot (thread-safe)."""
        with self._wake:
            latency = {}
            for stage, values in self._latency.items():
                if values:
                    v = np.fromiter(values, float)
                    latency[stage] = {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
                                      "max": float(v.max()), "count": len(v)}
            return Stats(**self._counts, pending=len(self._queue), map_voxels=len(self._map),
                         reasons=tuple(self._reasons), latency=latency)

    # ---------------------------------------------------------------- internals

    def _zero_counters(self):
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._reasons = deque(maxlen=REASONS_KEPT)
        self._latency = {s: deque(maxlen=self.config.stats_window) for s in STAGES}

    def _admit(self, frames):
        """(Submission, _Job or None): the capture offered to the window, under the lock."""
        with self._wake:
            self._counts["captures"] += 1
            admission = self.window.add(frames)
            if admission.reset:
                self._counts["window_resets"] += 1
                self._reasons.append(f"window: {admission.reset}")
                self._epoch += 1
            if not admission.admitted:
                return Submission(False, admission.reason, admission.reset, None), None
            self._counts["keyframes"] += 1
            self._seq += 1
            job = _Job(self._seq, tuple(self.window.views()), self._epoch, time.perf_counter())
        return Submission(True, admission.reason, admission.reset, job.seq), job

    def _work(self):
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                job = self._queue.popleft()
                self._busy = True
            try:
                self._execute(job)
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def _execute(self, job):
        """Run a job and deliver its Result to the callbacks; failures are counted, logged and reported."""
        try:
            result = self._run(job)
            if result is not None:
                for callback in self._on_result:
                    callback(result)
                with self._wake:
                    self._counts["done"] += 1
            return result
        except Exception as err:  # the worker must survive any bad input or backend failure
            self._failed(job, err)
            return None

    def _run(self, job):
        """The steps of one window: assembly, inference, reconstruction, chaining, map insertion.
        Returns the Result, or None when a reset() since the job's admission made it stale."""
        cfg = self.config
        timings = {}
        clock = time.perf_counter()

        def lap(stage):
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = now - clock
            clock = now

        batch = assemble(job.frames, cfg.batch)
        lap("assembly")
        prediction = self.backend.predict(batch)
        lap("inference")
        with self._wake:
            self._counts["inferred"] += 1
        recon = reconstruct(batch, prediction, depth_mode=cfg.depth_mode, edge_threshold=cfg.edge_threshold,
                            keep_measured=cfg.keep_measured, align_to_measured=cfg.align_to_measured)
        lap("reconstruction")
        with self._map_lock:
            with self._wake:
                if job.epoch < self._cleared_epoch:
                    self._counts["dropped"] += 1
                    return None
            map_reset = self._map_frame(job.epoch, recon.pose_frame)
            chained = None
            if recon.pose_frame != "world":
                chained = self.chain.apply(recon)
                recon = chained.reconstruction
                if chained.reset:
                    map_reset = self._clear_map(f"chain: {chained.reason}")
                lap("chaining")
            inserted = self._insert(recon)
            lap("map")
        timings["total"] = clock - job.submitted
        with self._wake:
            for stage, seconds in timings.items():
                self._latency[stage].append(seconds)
        return Result(job.seq, recon, chained, inserted, map_reset, timings)

    def _map_frame(self, epoch, pose_frame):
        """Clear the chain and map when this window cannot share their frame; returns why, or None."""
        reason = None
        if self._map_pose_frame is not None and pose_frame != self._map_pose_frame:
            reason = f"windows switched from the {self._map_pose_frame} frame to the {pose_frame} frame"
        elif pose_frame != "world" and self._map_epoch is not None and epoch != self._map_epoch:
            reason = "window reset (time went backwards): new chain frame"
        self._map_epoch, self._map_pose_frame = epoch, pose_frame
        if reason is None:
            return None
        self.chain.reset()
        return self._clear_map(reason)

    def _clear_map(self, reason):
        self._map.reset()
        with self._wake:
            self._counts["map_resets"] += 1
            self._reasons.append(f"map: {reason}")
        log.warning("map cleared: %s", reason)
        return reason

    def _insert(self, recon):
        """Insert every view's points at once, as seen from the newest view's camera; returns points accepted."""
        views = recon.views
        if not views:
            return 0
        newest = max(views, key=lambda v: v.frame.stamp_ns)
        return self._map.insert(np.concatenate([v.points for v in views]), np.concatenate([v.colors for v in views]),
                                np.concatenate([v.point_confidence for v in views]),
                                newest.world_from_camera[:3, 3])

    def _failed(self, job, err):
        with self._wake:
            self._counts["failed"] += 1
            failed = self._counts["failed"]
        now = time.monotonic()
        if now - self._last_log >= LOG_INTERVAL_S:
            self._last_log = now
            log.error("window %d failed (%d failures so far): %r", job.seq, failed, err, exc_info=err)
        for callback in self._on_error:
            try:
                callback(job.seq, err)
            except Exception:
                log.exception("error callback failed")
