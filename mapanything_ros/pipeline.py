"""Pipeline: the ROS-free orchestrator. Captures in, reconstructions and a global map out.

Two paths share every step (`_prepare`, then `_run`):
- live: `submit(frames)` from the ingestion thread (the node's callbacks) only offers the
  capture to the Window, which is cheap (no decoding, no projection: see window.Frame's deferred
  work); when a new keyframe is admitted, a snapshot of the window's views becomes a job. Four
  threads (`start`/`stop`, or `with pipeline:`) then take it in turn, each through a bounded
  queue: the prepare thread prepares the job's new keyframes, the worker runs the window
  (assembly, inference, reconstruction, chaining), the publish thread makes its outputs (the
  result callbacks) and sends its keyframes to the map, the map thread fuses them into the map.
  So the next window's keyframes are prepared and the previous window's outputs are made while
  the worker infers the current one, and the map is fused while the others go on (a stage's
  time, not the sum of the stages, bounds the windows a second). The job queues (before
  preparation and before the worker) are latest wins: when one is full its oldest job is dropped
  and counted (the keyframes of a dropped job stay in the window and are prepared, once, with the
  next job that holds them); every Result is published: the worker takes a job only while the
  publish thread's queue (of one) is empty, so the job it infers is the freshest; the map's queue
  holds MAP_QUEUE windows' fusions (when full, the oldest is dropped: map_dropped; a map clearing
  replaces what waits before it, which it would undo). An exception
  in a job's steps is caught, counted, logged (at most once per LOG_INTERVAL_S) and passed to the
  error callbacks; the thread carries on with the next job.
- offline: `process(frames)` does the same synchronously, fusion included, and returns the Result.
Use one path per pipeline.

Configuration: each job runs on the PipelineConfig in force when its capture was admitted (a
snapshot carried by the job, with the caller's `context`); `configure` swaps it for later jobs,
so a job never mixes two. Result callbacks are the caller's outputs: an exception in one is a
bug, logged at ERROR with its traceback (once per kind), counted (publish_failed), and the map
insertion runs all the same.

Where the work goes (the cost model of docs/design.md). Per keyframe, once: window.prepare (decode,
resize, normalise, sparse depth at the model resolution), kept while the keyframe is in the
window. Per window: assembly (stacking the prepared views), the backend, reconstruction (every
view's pose, alignment; native-resolution depth is made on first use, by the result callbacks,
for the newest capture's views, `Reconstruction.views`, the ones that are published: so each
output can go out as soon as it is made, ~/points before any native depth map), chaining in
image-only mode, then the result callbacks (the outputs). The stages from the prediction to the
end of the callbacks are the critical path. Map fusion comes after the callbacks, on the map
thread, off that path, and takes each keyframe once (`map_insert`): "newest", from the first window that holds it
(where it is the newest view; a keyframe whose own job was dropped enters with the next window),
or "oldest", from the last window that holds it (where it is the oldest view and the window the
fullest), the keyframes still in the window entering at `flush_map()`.

Frames of the map. A window whose reference pose is known (use_poses and poses given) is
reconstructed in the world frame and inserted as it is. Otherwise (image-only) each window is in
its own reference camera frame, and mapping.WindowChain carries it into one chain frame first.
The map holds one frame only, so it is cleared (and the clearing counted, with its reason) when
the chain starts a new segment, when the window is reset (time went backwards) in image-only
mode, and when the windows switch between world and chain frames. The worker decides a clearing
(with the window that needs it); a window made before it (or before a load_map()) and published
after it sends nothing to the map (its keyframes still in the window enter again, reconstructed
in the new frame, with later windows). Without poses, the motion of
the main camera between the two newest keyframes of the last chained window (window.MotionRate)
admits captures by motion as well as by time.

Counters (stats()): captures offered, keyframes admitted, jobs dropped (queue full, pending or
being prepared at stop()/reset(), or inferred and waiting for the publish thread then), jobs
inferred (backend returned), jobs done (result delivered), jobs failed (a map fusion that raised
included), window resets (time going backwards), map resets with
the last reasons, keyframe views (one per camera of a keyframe: the map's unit) dropped before fusion
(map_dropped: by a full map queue or by stop(); work that a clearing, a load or a reset made pointless
is not counted), keyframe views fused into the map (map_keyframes), keyframe views that alone reached
more blocks than the map's memory bound keeps (map_overflows), keyframe views whose camera lay beyond
the map's extent (map_outside: TsdfMap.extent) and keyframes left out of the
window because they could not be prepared or their first window failed while running (bad_frames); per-stage
latencies in seconds (p50, p95, max over the last `stats_window` jobs that ran the stage).
"""

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from .mapping import CompletionConfig, TsdfMap, WindowChain, reconstruct
from .mapping.tsdf import VOXELS
from .mapping.reconstruction import EDGE_NOISE_SIGMAS
from .window import BatchConfig, KeyframePolicy, MotionRate, Window, assemble, batch_size, prepare
from .window.batch import prepare_key

log = logging.getLogger(__name__)
# Per job: prepare (new keyframes), assembly, inference, reconstruction (+ chaining) and publish
# (the result callbacks, which make the published views' native depth) up to the outputs; map
# after them; total: submitted -> outputs done.
STAGES = ("prepare", "assembly", "inference", "reconstruction", "chaining", "publish", "map", "total")
MAP_INSERT = ("newest", "oldest")
LOG_INTERVAL_S = 10.0  # failures are logged at most this often (each log line says how many)
REASONS_KEPT = 20
BAD_KEPT = 256  # Frame.key of left-out keyframes remembered for the jobs admitted before (a few at most)
MAP_QUEUE = 8  # windows' fusions waiting for the map thread at most


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline does, in one place.

    window_size: keyframes per window (N captures, each of all cameras); keyframes: the
    admission thresholds; reference: the window's reference rule ("newest" or "oldest", see
    window.Window); batch: which inputs the model gets and at what resolution; depth_mode,
    edge_threshold, edge_noise_sigmas, keep_measured, align_to_measured, completion (a
    mapping.CompletionConfig or None): see mapping.reconstruct; voxel_size (m), truncation (m or
    None: 4 voxels), truncation_ratio, max_weight, min_weight, max_range (m or None: no limit):
    see mapping.TsdfMap; max_voxels: its memory bound in voxels (whole blocks); confidence_quantile:
    each view's least confident fraction is not fused (Reconstruction.range_view); queue_size:
    pending jobs kept (1: only the latest); stats_window: jobs over which latencies are summarised.
    """

    window_size: int = 8
    keyframes: KeyframePolicy = field(default_factory=KeyframePolicy)
    reference: str = "newest"
    batch: BatchConfig = field(default_factory=BatchConfig)
    depth_mode: str = "bilinear"
    edge_threshold: float | None = 0.05
    edge_noise_sigmas: float = EDGE_NOISE_SIGMAS
    keep_measured: bool = False
    align_to_measured: bool = False
    completion: CompletionConfig | None = None
    voxel_size: float = 0.05
    truncation: float | None = None
    truncation_ratio: float = 0.1
    max_weight: float = 50.0
    min_weight: float = 0.25
    max_range: float | None = None
    max_voxels: int = 10_000_000
    confidence_quantile: float = 0.0
    map_insert: str = "newest"
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
    stamp_ns: the window's stamp, its reference view's image stamp (the view its poses are
    anchored at); config: the PipelineConfig it was made with; context: the caller's, as given
    to submit/process; reconstruction: the mapping.Reconstruction (pose_frame "world", or the chain frame in
    image-only mode) whose `views` are the newest capture's (the published ones); every view's
    pose is in `poses`, any view's results on demand; chain: the mapping.ChainResult, or None
    when poses were known; map_reset: why the map was cleared before this window, or None;
    timings: seconds per stage that ran before the callbacks (see STAGES; "publish" and "map"
    are in stats(); "prepare" is the time the job's own preparation took, on the prepare thread
    when running threads); epoch: the window epoch it was made in (see `epoch`).
    """

    seq: int
    stamp_ns: int
    config: PipelineConfig
    context: object
    reconstruction: object
    chain: object
    map_reset: str | None
    timings: dict
    epoch: int


@dataclass(frozen=True)
class Stats:
    """A snapshot of the counters (see the module doc). pending: windows waiting for preparation,
    for the worker or for the publish thread (not those a thread is on); latency: stage -> {"p50",
    "p95", "max", "count"} seconds over the recent jobs that ran the stage; reasons: the last window
    and map resets."""

    captures: int
    keyframes: int
    dropped: int
    inferred: int
    done: int
    failed: int
    window_resets: int
    map_resets: int
    map_dropped: int
    map_keyframes: int
    map_overflows: int
    map_outside: int
    bad_frames: int
    publish_failed: int
    pending: int
    map_blocks: int
    reasons: tuple
    latency: dict


@dataclass(frozen=True, eq=False)
class MapSnapshot:
    """The map at one moment: points (M, 3) float32 m, colors (M, 3) uint8, confidence (M,);
    pose_frame: "world", "chain" or None (empty since start-up or reset); stamp_ns: the stamp of
    the newest window inserted (Result.stamp_ns), or None."""

    points: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray
    pose_frame: str | None
    stamp_ns: int | None


@dataclass(frozen=True, eq=False)
class _MapItem:
    """Work for the map thread: fuse views `indices` of `recon` (stamp and pose frame of its window),
    or, with recon None, clear the map. Skipped when the map was cleared, loaded or reset after it
    was made (`generation`: Pipeline._map_generation then): that work would be undone, or is of
    another map."""

    generation: int
    recon: object
    indices: tuple
    confidence_quantile: float
    stamp_ns: int | None
    pose_frame: str | None


@dataclass(frozen=True, eq=False)
class _Job:
    seq: int
    frames: tuple
    epoch: int  # window epoch (changes at window resets and at reset())
    submitted: float  # time.perf_counter()
    config: PipelineConfig  # in force at admission: the whole job runs on it
    context: object  # the caller's, passed to the Result
    prepared: dict | None = None  # once prepared (Pipeline._prepare): prepare_key -> PreparedView of `frames`
    prepare_s: float = 0.0  # what the preparation took


COUNTERS = ("captures", "keyframes", "dropped", "inferred", "done", "failed", "window_resets", "map_resets",
            "map_dropped", "map_keyframes", "map_overflows", "map_outside", "bad_frames", "publish_failed")


class Pipeline:
    """Frames in, Results out; `backend` is a backends.Backend. See the module doc."""

    def __init__(self, config=PipelineConfig(), backend=None):
        if backend is None:
            raise ValueError("a backend is needed (backends.MapAnythingBackend, OracleBackend, ...)")
        _check(config)
        self.config = config
        self.backend = backend
        self.window = Window(config.window_size, config.keyframes, config.reference)
        self.chain = WindowChain()
        self._map = new_map(config)
        self._map_blocks = 0  # len(self._map) after each change, for stats() (which must not wait for the map lock)
        self._map_version = 0  # + 1 at each change of the map (map_version)
        # Lock order: _chain_lock, then _map_lock, then _lock; never the other way.
        self._chain_lock = threading.RLock()  # chain, the map's frame decisions, which keyframes went to the map
        self._map_lock = threading.RLock()  # the map itself, its frame and stamp
        self._lock = threading.Lock()  # window, queues, counters, epochs
        self._wake = threading.Condition(self._lock)
        self._to_prepare = deque()  # jobs for the prepare thread
        self._preparing = False
        self._prepare_thread = None
        self._queue = deque()  # prepared jobs for the worker
        self._busy = False
        self._thread = None
        self._results = deque()  # (job, Result, map generation) for the publish thread: one at most
        self._publishing = False
        self._publish_thread = None
        self._map_items = deque()  # _MapItems for the map thread, in order
        self._held_clear = None  # a clearing that stop() keeps for when the threads have ended
        self._map_busy = False
        self._map_thread = None
        self._stopping = False
        self._on_result, self._on_error, self._on_publish_error = [], [], []
        self._seq = 0
        self._epoch = 0  # window epoch of new jobs
        self._cleared_epoch = 0  # jobs older than this were made before reset(): discarded
        self._frame_epoch = None  # window epoch and pose frame of the windows sent to the map (worker)
        self._frame_pose = None
        self._map_pose_frame = None  # pose frame of the map's content (map thread)
        # Touched by _prepare only: the prepare thread, or process()'s caller offline.
        self._views = {}  # window.prepare_key -> PreparedView of the frames in the window
        self._bad = {}  # Frame.key of keyframes left out (failed to prepare or to run), oldest first (under _wake)
        self._ran = frozenset()  # Frame.key of the last window that ran (under _wake)
        self._blamed = False  # a window failed since the last one that ran: its new keyframes left out (_run)
        self._in_map = set()  # Frame.key of the keyframes sent to the map (in the window's epoch)
        self._map_generation = 0  # + 1 when the map is cleared, loaded or reset (under the chain lock)
        self._last = None  # (job, Result, map generation) of the newest window, for flush_map
        self._map_stamp = None  # Result.stamp_ns of the newest window in the map
        self._last_log = -np.inf
        self._callback_errors = set()  # (callback, exception type) already logged
        self._zero_counters()

    def configure(self, config):
        """Use `config` for the jobs admitted from now on (window_size, reference, voxel_size,
        the map's settings, map_insert and queue_size are fixed at construction)."""
        _check(config)
        fixed = ("window_size", "reference", "voxel_size", "truncation", "truncation_ratio", "max_weight",
                 "min_weight", "max_range", "max_voxels", "map_insert", "queue_size")
        changed = [n for n in fixed if getattr(config, n) != getattr(self.config, n)]
        if changed:
            raise ValueError(f"fixed at construction: {', '.join(changed)}")
        with self._wake:
            self.config = config
            self.window.policy = config.keyframes

    # ---------------------------------------------------------------- ingestion

    def submit(self, frames, context=None):
        """Offer a capture (a Frame or Frames of one capture stamp) without waiting for inference;
        returns a Submission. context: passed to the window's Result."""
        submission, job = self._admit(frames, context)
        if job is not None:
            with self._wake:
                self._offer(self._to_prepare, job)
        return submission

    def process(self, frames, context=None):
        """Offer a capture and, if it is a new keyframe, run its window now (offline path).

        Returns (Submission, Result or None); None when not admitted or when the job failed
        (counted and reported to the error callbacks like on the threads). RuntimeError while the
        threads run (one path per pipeline); after stop(), once they ended, it runs offline.
        """
        with self._wake:
            if any(t.is_alive() for t in self._threads()):
                raise RuntimeError("process() while the pipeline's threads run: use submit(), or stop() first")
            self._stopping = False  # stop()'s flag would make every job stale
            self._prepare_thread = self._thread = self._publish_thread = self._map_thread = None
        self._apply_held()
        submission, job = self._admit(frames, context)
        return submission, (None if job is None else self._execute(job))

    def on_result(self, callback):
        """Call callback(Result) for every finished window, in order (on the publish thread, or in
        process())."""
        self._on_result.append(callback)

    def on_error(self, callback):
        """Call callback(seq, exception) for every failed window: on the prepare thread (a frame
        that cannot be prepared), the worker or the publish thread (the map's bookkeeping), so
        callbacks must be thread-safe; in process() when running offline."""
        self._on_error.append(callback)

    def on_publish_error(self, callback):
        """Call callback(seq, exception) for every exception raised by a result callback."""
        self._on_publish_error.append(callback)

    # ---------------------------------------------------------------- threads

    def start(self):
        """Start the threads (no-op if running; after stop(), once the stopped threads ended: their
        job in progress ends first)."""
        with self._wake:
            if self._thread is not None and self._thread.is_alive() and not self._stopping:
                return
            old = self._threads()
        for thread in old:
            thread.join()
        self._apply_held()
        with self._wake:
            self._stopping = False
            self._prepare_thread, self._thread, self._publish_thread, self._map_thread = (
                threading.Thread(target=self._serve, args=(items, busy, run, ready), name=name, daemon=True)
                for items, busy, run, name, ready in (
                    (self._to_prepare, "_preparing", self._prepare_job, "mapanything-prepare", None),
                    (self._queue, "_busy", self._execute, "mapanything-pipeline", lambda: not self._results),
                    (self._results, "_publishing", self._publish, "mapanything-publish", None),
                    (self._map_items, "_map_busy", self._apply_logged, "mapanything-map", None)))
            for thread in self._threads():
                thread.start()

    def stop(self, timeout=None):
        """Stop the threads: the job running ends after its current stage (inference, whose call
        cannot be cut short, included) without a result, a job being prepared is dropped when its
        preparation ends, the result being published is published, the keyframe being fused
        ends; pending jobs and results are dropped (counted), and so is the map's work, pending or
        sent meanwhile (counted; a later window that still holds its keyframes sends them), but a
        map clearing among it is applied once the threads have ended (when they end after stop()
        returned: by start(), process() or the first map work flush_map() sends). Returns True when
        the threads ended within `timeout` seconds (None: wait; the wait for the pipeline's locks
        included, not that for applying the clearing)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._chain_lock, self._wake:
            self._stopping = True
            self._counts["dropped"] += len(self._queue) + len(self._to_prepare) + len(self._results)
            if self._map_items and self._map_items[0].recon is None:  # a clearing comes first, if any
                self._held_clear = self._map_items[0]
            self._drop_fusions(self._map_items)
            self._to_prepare.clear()
            self._queue.clear()
            self._results.clear()
            self._map_items.clear()
            self._wake.notify_all()
            threads = self._threads()
        for thread in threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        ended = not any(t.is_alive() for t in threads)
        if ended:  # the map must not keep a frame the pipeline has left (start() again)
            self._apply_held()
        return ended

    def drain(self, timeout=None):
        """Wait until no job and no map work is pending or running; True if so within `timeout` seconds."""
        with self._wake:
            return self._wake.wait_for(lambda: not (self._to_prepare or self._preparing or self._queue or self._busy
                                                    or self._results or self._publishing or self._map_items
                                                    or self._map_busy), timeout)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---------------------------------------------------------------- state

    @property
    def map(self):
        """The mapping.TsdfMap. The map thread writes it: read it through map_points() while running."""
        return self._map

    @property
    def map_version(self):
        """A number that changes whenever the map does (a fusion, a clearing, a load or a reset)."""
        return self._map_version

    def map_points(self):
        """A consistent MapSnapshot of the map's surface (points, their frame and stamp), found on a
        copy of the map taken under the map lock: fusion waits for the copy, not for the search
        (after a load a search of the whole map: 68 ms at 9 M voxels compiled, 0.3 s in numpy); the map keeps the
        copy's surface (TsdfMap.adopt), so the next search covers only what was fused since."""
        surface, frame, stamp = self._on_copy(lambda volume: volume.surface())
        return MapSnapshot(*surface, frame, stamp)

    def map_mesh(self):
        """(TsdfMap.mesh_regions: the mesh in regions, pose_frame, stamp_ns) of the map,
        consistently (pose_frame None when the map is empty). Meshed from a copy taken under the
        map lock: fusion waits for the copy (tens of ms), not for the meshing (after a load 0.2 s
        at 9 M voxels compiled, 2.3 s in numpy); the map keeps the copy's mesh, so the next one
        meshes only what was fused after the copy (TsdfMap.adopt)."""
        return self._on_copy(lambda volume: volume.mesh_regions())

    def _on_copy(self, make, when=None):
        """(make(a copy of the map), pose_frame, stamp_ns): the copy taken under the map lock, made
        into an output outside it, what it found kept by the map (TsdfMap.adopt); (None, pose_frame,
        stamp_ns), copying nothing, where when(pose_frame) is False."""
        with self._map_lock:
            if when is not None and not when(self._map_pose_frame if len(self._map) else None):
                return None, self._map_pose_frame, self._map_stamp
            volume, frame, stamp = self._map_copy()
        out = make(volume)
        with self._map_lock:
            self._map.adopt(volume)
        return out, frame, stamp

    def _map_copy(self):
        """(a copy of the TsdfMap, pose_frame (None when empty), stamp_ns), taken under the map lock."""
        with self._map_lock:
            return self._map.copy(), self._map_pose_frame if len(self._map) else None, self._map_stamp

    def occupancy(self, z_min, z_max, resolution=None):
        """(grid.Grid2D of the height band, pose_frame, stamp_ns) of the map, consistently (see
        TsdfMap.occupancy; pose_frame None when the map is empty). The grid is None when the map
        is in a chain frame (image-only: its up is unknown, so it has no height band). Made from a
        copy, as map_points (after a load: 0.16 s at 9 M voxels compiled, 0.6 s in numpy)."""
        return self._on_copy(lambda volume: volume.occupancy(z_min, z_max, resolution),
                             when=lambda frame: frame in (None, "world"))

    def map_state(self):
        """(the whole map for saving: TsdfMap.state() plus "pose_frame" and "stamp_ns" (-1: none),
        the copy of the map it is, for its surface and mesh): one consistent map, copied under the
        map lock. ValueError when it is empty."""
        volume, frame, stamp = self._map_copy()
        if frame is None:
            raise ValueError("the map is empty (nothing mapped since start-up or reset)")
        state = {**volume.state(), "pose_frame": np.array(frame), "stamp_ns": np.array(-1 if stamp is None else stamp)}
        return state, volume

    def load_map(self, state):
        """Replace the map by a map_state() (ValueError when it does not fit this map: voxel size,
        truncation, block, memory bound). Map work pending for the old map is dropped; mapping goes
        on into the loaded one; a window in another frame (a chain map under poses, or any new chain
        segment) clears it, as it would the map it replaces."""
        for name, kind in (("pose_frame", np.str_), ("stamp_ns", np.integer)):  # before anything is replaced
            if name not in state or np.ndim(state[name]) != 0 or not np.issubdtype(np.asarray(state[name]).dtype, kind):
                raise ValueError(f"the map's {name} is missing or not a single {kind.__name__}")
        with self._chain_lock, self._map_lock:
            self._map.load_state(state)
            self._map_changed()
            self._map_pose_frame = self._frame_pose = str(state["pose_frame"])
            stamp = int(state["stamp_ns"])
            self._map_stamp = None if stamp < 0 else stamp
            self._frame_epoch = None
            self._in_map.clear()
            self._map_generation += 1  # windows made before are not sent to the loaded map (_insert)
            with self._wake:
                self._map_items.clear()  # of the old map (its keyframes unmarked above: later windows send them)
                self._held_clear = None  # it must not empty the loaded map

    def reset(self, counters=False):
        """Start over: clear the window, pending jobs (counted as dropped), the chain and the map;
        a job running now is discarded. Counters and latencies are kept unless `counters`."""
        with self._chain_lock, self._map_lock, self._wake:
            self.window.clear()
            self._counts["dropped"] += len(self._queue) + len(self._to_prepare) + len(self._results)
            self._to_prepare.clear()
            self._queue.clear()
            self._results.clear()
            self._map_items.clear()
            self._held_clear = None
            self._new_epoch()
            self._map_generation += 1  # windows made before are not sent to the map (_insert)
            self._wake.notify_all()  # the publish queue emptied: the worker may take a job
            self.chain.reset()
            self._map.reset()
            self._map_changed()
            self._in_map.clear()
            self._last = self._map_stamp = None
            self._frame_epoch = self._frame_pose = self._map_pose_frame = None
            if counters:
                self._zero_counters()

    def restart_window(self, reason):
        """Empty the window as time going backwards does (the clock jumped back: a bag loop, /clock
        set back): the windows in flight, of the old timeline, are dropped; the map stays (a chain
        frame's map is cleared by the next window, of a new chain)."""
        with self._wake:
            self.window.clear()
            self._counts["window_resets"] += 1
            self._reasons.append(f"window: {reason}")
            self._new_epoch()
        log.warning("window cleared: %s", reason)

    @property
    def epoch(self):
        """The window's epoch: it changes at reset() and when time goes backwards (a window reset)."""
        return self._epoch

    def stats(self):
        """A Stats snapshot (thread-safe)."""
        with self._wake:
            latency = {}
            for stage, values in self._latency.items():
                if values:
                    v = np.fromiter(values, float)
                    latency[stage] = {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
                                      "max": float(v.max()), "count": len(v)}
            return Stats(**self._counts, pending=len(self._to_prepare) + len(self._queue) + len(self._results),
                         map_blocks=self._map_blocks, reasons=tuple(self._reasons), latency=latency)

    # ---------------------------------------------------------------- internals

    def _new_epoch(self):
        """A new window epoch (the window was emptied): jobs made before are stale, and what was known
        of its keyframes goes (a bag loop brings the same keys again). Under the lock."""
        self._epoch += 1
        self._cleared_epoch = self._epoch
        self._bad, self._ran, self._blamed = {}, frozenset(), False

    def _leave_out(self, frames):
        """Drop the keyframes holding `frames` from the window, and those frames from jobs admitted
        before (_prepare, _run); counted as bad_frames, one per keyframe. Under the lock."""
        for frame in frames:
            self._bad[frame.key] = None
            self.window.discard(frame.key)
        while len(self._bad) > BAD_KEPT:  # older ones are in no job: jobs in flight are few
            del self._bad[next(iter(self._bad))]
        self._counts["bad_frames"] += len({f.capture_ns for f in frames})

    def _zero_counters(self):
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._reasons = deque(maxlen=REASONS_KEPT)
        self._latency = {s: deque(maxlen=self.config.stats_window) for s in STAGES}

    def _admit(self, frames, context):
        """(Submission, _Job or None): the capture offered to the window, under the lock."""
        with self._wake:
            self._counts["captures"] += 1
            admission = self.window.add(frames)
            if admission.reset:  # time went backwards: the windows in flight are of the old timeline
                self._counts["window_resets"] += 1
                self._reasons.append(f"window: {admission.reset}")
                self._new_epoch()
            if not admission.admitted:
                return Submission(False, admission.reason, admission.reset, None), None
            self._counts["keyframes"] += 1
            self._seq += 1
            job = _Job(self._seq, tuple(self.window.views()), self._epoch, time.perf_counter(), self.config, context)
        return Submission(True, admission.reason, admission.reset, job.seq), job

    def _threads(self):
        """The threads started (prepare, worker, publish, map), under the lock."""
        return [t for t in (self._prepare_thread, self._thread, self._publish_thread, self._map_thread)
                if t is not None]

    def _offer(self, items, job):
        """Queue a job on `items` (a job queue), latest wins: when full, its oldest job is dropped
        (counted). Under the lock."""
        if len(items) >= self.config.queue_size:
            items.popleft()
            self._counts["dropped"] += 1
        items.append(job)
        self._wake.notify_all()  # the threads wait on it

    def _prepare_job(self, job):
        """The prepare thread's step: prepare a job's new keyframes, then queue it for the worker.
        A job that stop() or a reset() since its admission made pointless is dropped (counted),
        before its preparation or after it; one that cannot be prepared fails (counted, reported)."""
        with self._wake:
            if self._dropped_if_stale(job):
                return
        try:
            job = self._prepare(job)
        except Exception as err:  # the thread must survive any bad input
            self._failed(job, err)
            return
        with self._wake:
            if not self._dropped_if_stale(job):
                self._offer(self._queue, job)

    def _dropped_if_stale(self, job):
        """Whether stop() or a reset() since the job's admission made it pointless; if so it is
        counted as dropped. Under the lock."""
        if self._stopping or job.epoch < self._cleared_epoch:
            self._counts["dropped"] += 1
            return True
        return False

    def _serve(self, items, busy, run, ready=None):
        """A thread's loop: run(item) for each item of the deque `items` in turn, when `ready()`
        (None: always), with the flag attribute `busy` set meanwhile (drain() waits on it), until
        stop()."""
        while True:
            with self._wake:
                self._wake.wait_for(lambda: (items and (ready is None or ready())) or self._stopping)
                if self._stopping:
                    return
                item = items.popleft()
                setattr(self, busy, True)
                self._wake.notify_all()  # room in `items`: the worker waits for an empty publish queue
            try:
                run(item)
            finally:
                with self._wake:
                    setattr(self, busy, False)
                    self._wake.notify_all()

    def _execute(self, job):
        """Run a job to its Result, then publish it: where the threads were started, on the publish
        thread (its queue is empty: the worker takes a job only then; dropped, counted, when stop()
        or a reset() came meanwhile), else now. Returns the Result once published (offline), None
        when handed over, stale or failed (counted, logged and reported)."""
        try:
            made = self._run(job)
        except Exception as err:  # the worker must survive any bad input or backend failure
            self._failed(job, err)
            return None
        if made is None:
            return None
        item = (job, *made)
        with self._wake:
            if self._publish_thread is not None:
                if not self._dropped_if_stale(job):  # stop() or a reset() meanwhile
                    self._results.append(item)
                    self._wake.notify_all()
                return None
        return made[0] if self._publish(item) else None

    def _publish(self, item):
        """Deliver a (job, Result, map generation) to the callbacks, then send its keyframes to the
        map; returns whether it got that far (a failure is counted, logged and reported)."""
        job, result, generation = item
        with self._wake:
            if job.epoch < self._cleared_epoch:  # waited for this thread across a reset or restart_window
                self._counts["dropped"] += 1
                return False
        try:
            clock = time.perf_counter()
            for callback in self._on_result:
                self._call(callback, result)
            now = time.perf_counter()
            with self._wake:
                self._counts["done"] += 1
                self._latency["publish"].append(now - clock)
                self._latency["total"].append(now - job.submitted)
            self._insert(job, result, generation)
            return True
        except Exception as err:  # the thread must survive a failure of the map's bookkeeping
            self._failed(job, err)
            return False

    def _run(self, job):
        """The steps of one window up to its Result: preparation of new keyframes (unless the
        prepare thread did it), assembly, inference, reconstruction (native depth left to first use)
        and chaining. Returns (Result, the map's generation after the window's map decisions), or
        None when stop() or a reset() since the job's admission made it stale.

        When a window fails after its preparation, just after one that ran, its keyframes that the
        window before did not hold are left out of the window (_leave_out), as a keyframe that cannot
        be prepared is: one keyframe the backend or the reconstruction cannot take fails one window,
        not every window until it leaves (a transient failure costs those keyframes). Failures after
        that blame none until a window runs again (the cause is then an older keyframe, which leaves
        as the window slides). A job prepared before a keyframe of it was left out is prepared again
        without it, unless a newer job was admitted (latest wins: that one holds its keyframes)."""
        with self._wake:
            if self._dropped_if_stale(job):  # not worth inferring
                return None
            if job.prepared is not None and any(f.key in self._bad for f in job.frames):
                if job.seq < self._seq:  # a newer job was admitted (its frames taken after this one's)
                    self._counts["dropped"] += 1
                else:
                    self._to_prepare.append(replace(job, prepared=None))
                    self._wake.notify_all()
                return None
        if job.prepared is None:
            job = self._prepare(job)
        try:
            made = self._infer(job)
        except Exception:
            with self._wake:
                if not self._blamed and job.epoch == self._epoch:
                    self._blamed = True
                    self._leave_out([f for f in job.frames if f.key not in self._ran])
            raise
        if made is not None:
            with self._wake:
                if job.epoch == self._epoch:
                    self._ran, self._blamed = frozenset(f.key for f in job.frames), False
        return made

    def _infer(self, job):
        """_run's steps after the preparation."""
        cfg = job.config
        frames = job.frames
        timings = {"prepare": job.prepare_s}
        clock = time.perf_counter()

        def lap(stage):
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = now - clock
            clock = now

        batch = assemble(frames, cfg.batch, job.prepared)
        lap("assembly")
        prediction = self.backend.predict(batch)
        lap("inference")
        with self._wake:
            self._counts["inferred"] += 1
            if self._stopping:  # stop(): no result
                self._counts["dropped"] += 1
                return None
        prediction.check()  # a diverged network's poses: the window fails (said), nothing published
        newest = max(f.capture_ns for f in frames)
        recon = reconstruct(batch, prediction, views=[i for i, f in enumerate(frames) if f.capture_ns == newest],
                            depth_mode=cfg.depth_mode, edge_threshold=cfg.edge_threshold,
                            edge_noise_sigmas=cfg.edge_noise_sigmas, keep_measured=cfg.keep_measured,
                            align_to_measured=cfg.align_to_measured, completion=cfg.completion)
        lap("reconstruction")
        with self._chain_lock:
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
            generation = self._map_generation
        rate = None if chained is None else MotionRate.of(recon.frames, recon.poses)
        with self._wake:
            for stage, seconds in timings.items():
                self._latency[stage].append(seconds)
            if job.epoch == self._epoch:  # admits captures without a pose by motion too (None: by time)
                self.window.rate = rate
        return Result(job.seq, frames[0].stamp_ns, cfg, job.context, recon, chained, map_reset, timings,
                      job.epoch), generation

    def _prepare(self, job):
        """The job with its frames prepared (`prepared`, `prepare_s`), each frame once
        (window.prepare) while it stays in the window. A frame that cannot be prepared (bad image,
        depth not matching the camera) is dropped from the window and reported by raising
        ValueError; later jobs leave it out. Frames that failed before are left out of the job."""
        clock = time.perf_counter()
        cfg = job.config.batch
        with self._wake:
            frames = [f for f in job.frames if f.key not in self._bad]
        if not frames:
            raise ValueError("every frame of the window failed to prepare")
        size = batch_size(frames, cfg)
        keys = [prepare_key(f, size, cfg) for f in frames]
        self._views = {k: self._views[k] for k in keys if k in self._views}
        for frame, key in zip(frames, keys):
            if key in self._views:
                continue
            try:
                self._views[key] = prepare(frame, size, cfg)
            except ValueError as err:
                with self._wake:  # (the whole capture: jobs admitted before must not prepare its other frames)
                    self._leave_out([f for f in job.frames if f.capture_ns == frame.capture_ns])
                raise ValueError(f"keyframe {frame.frame_id} at {frame.stamp_ns} ns dropped: {err}") from err
        return replace(job, frames=tuple(frames), prepared={k: self._views[k] for k in keys},
                       prepare_s=time.perf_counter() - clock)

    def _map_frame(self, epoch, pose_frame):
        """Clear the chain and map when this window cannot share their frame; returns why, or None
        (worker, under the chain lock)."""
        reason = None
        if self._frame_pose is not None and pose_frame != self._frame_pose:
            reason = f"windows switched from the {self._frame_pose} frame to the {pose_frame} frame"
        elif pose_frame != "world" and self._frame_epoch is not None and epoch != self._frame_epoch:
            reason = "window reset (time went backwards): new chain frame"
        self._frame_epoch, self._frame_pose = epoch, pose_frame
        if reason is None:
            return None
        self.chain.reset()
        return self._clear_map(reason)

    def _clear_map(self, reason):
        """Have the map cleared before what is sent to it next (under the chain lock); returns `reason`."""
        self._in_map.clear()  # the window's keyframes enter again, in the new frame
        self._map_generation += 1  # windows made before are not sent to the map (_insert)
        with self._wake:
            self._counts["map_resets"] += 1
            self._reasons.append(f"map: {reason}")
        log.warning("map cleared: %s", reason)
        self._send(_MapItem(self._map_generation, None, (), 0.0, None, None))
        return reason

    def _insert(self, job, result, generation):
        """Send the keyframes this window enters to the map (see the module doc's map_insert), unless
        the map was cleared, loaded or reset since the window was made (`generation`:
        _map_generation then)."""
        recon = result.reconstruction
        frames = recon.frames
        with self._chain_lock:
            if generation != self._map_generation:
                return
            if job.config.map_insert == "newest":
                todo = [i for i, f in enumerate(frames) if f.key not in self._in_map]
            else:
                stamps = sorted({f.capture_ns for f in frames})
                full = len(stamps) >= job.config.window_size
                todo = [i for i, f in enumerate(frames)
                        if full and f.capture_ns == stamps[0] and f.key not in self._in_map]
            self._send_views(job, result, todo)
            self._in_map &= {f.key for f in frames}
            self._last = (job, result, generation)

    def flush_map(self):
        """Send the newest window's keyframes that are not in the map yet (map_insert "oldest"
        leaves them out until they leave the window; call at the end of a run, then drain() when
        running threads). Returns how many."""
        with self._chain_lock:
            if self._last is None:
                return 0
            job, result, generation = self._last
            if generation != self._map_generation:
                return 0
            todo = [i for i, f in enumerate(result.reconstruction.frames) if f.key not in self._in_map]
            self._send_views(job, result, todo)
            return len(todo)

    def _send_views(self, job, result, indices):
        """Send views `indices` of a Result to the map (under the chain lock)."""
        if not indices:
            return
        recon = result.reconstruction
        self._in_map.update(recon.frames[i].key for i in indices)
        self._send(_MapItem(self._map_generation, recon, tuple(indices), job.config.confidence_quantile,
                            result.stamp_ns, recon.pose_frame))

    def _send(self, item):
        """Queue map work for the map thread, or do it now without threads (process(), or once the
        stopped threads have ended: the clearing stop() kept first). A clearing replaces the work
        queued before it, which it would undo (its keyframes are sent again in the new frame); a
        full queue drops its oldest fusion; while stop() waits for the threads, fusions are dropped
        and a clearing is kept (_held_clear). A dropped fusion is counted (map_dropped) and its
        keyframes unmarked: a later window that still holds them sends them. Under the chain lock."""
        with self._wake:
            running = any(t.is_alive() for t in self._threads())
            if running and self._stopping:
                if item.recon is None:
                    self._held_clear = item
                else:
                    self._drop_fusions([item])
                return
            if running:
                if item.recon is None:
                    self._map_items.clear()  # _clear_map unmarked every keyframe already
                elif len(self._map_items) >= MAP_QUEUE:
                    old = next(x for x in self._map_items if x.recon is not None)  # one clearing at most
                    self._map_items.remove(old)
                    self._drop_fusions([old])
                self._map_items.append(item)
                self._wake.notify_all()
                return
        self._apply_held()
        self._apply(item)

    def _drop_fusions(self, items):
        """Count the fusions among map items dropped before they ran (map_dropped) and unmark their
        keyframes: a later window that holds them sends them (under the chain lock and the lock)."""
        for item in items:
            if item.recon is not None:
                self._counts["map_dropped"] += len(item.indices)
                self._in_map.difference_update(item.recon.frames[i].key for i in item.indices)

    def _apply_held(self):
        """Apply the clearing that stop() kept, if any (the threads have ended; under the map lock
        throughout: a map loaded meanwhile discards it)."""
        with self._map_lock:
            with self._wake:
                item, self._held_clear = self._held_clear, None
            if item is not None:
                self._apply(item)

    def _apply_logged(self, item):
        """_apply on the map thread: an exception is a bug, logged and counted; the thread goes on."""
        try:
            self._apply(item)
        except Exception as err:
            log.error("map fusion failed: %r", err, exc_info=err)
            with self._wake:
                self._counts["failed"] += 1

    def _apply(self, item):
        """Clear the map, or fuse the item's views into it (under the map lock), unless the map was
        cleared, loaded or reset since the item was made."""
        clock = time.perf_counter()
        with self._map_lock:
            if item.generation != self._map_generation:  # changed under the map lock, or undone by a clearing
                return
            if item.recon is None:
                self._map.reset()
                self._map_changed()
                self._map_stamp = self._map_pose_frame = None
                return
            overflows = outside = 0
            try:
                for i in item.indices:
                    self._map.integrate(item.recon.range_view(i, item.confidence_quantile))
                    overflows += self._map.overflow > 0
                    outside += self._map.outside
            finally:
                self._map_changed()
            self._map_stamp, self._map_pose_frame = item.stamp_ns, item.pose_frame
        with self._wake:
            self._counts["map_keyframes"] += len(item.indices)
            self._counts["map_overflows"] += overflows
            self._counts["map_outside"] += outside
            self._latency["map"].append(time.perf_counter() - clock)

    def _map_changed(self):
        """After each change of the map (under the map lock): its size for stats() and its version."""
        self._map_blocks = len(self._map)
        self._map_version += 1

    def _call(self, callback, result):
        """callback(result); an exception is a bug in the caller's outputs: counted, logged at
        ERROR with its traceback the first time for this callback and kind, never raised."""
        try:
            callback(result)
        except Exception as err:
            kind = (getattr(callback, "__qualname__", repr(callback)), type(err).__name__)
            with self._wake:
                self._counts["publish_failed"] += 1
                first = kind not in self._callback_errors
                self._callback_errors.add(kind)
            if first:
                log.error("result callback %s failed on window %d (the map is updated all the same): %r",
                          kind[0], result.seq, err, exc_info=err)
            for handler in self._on_publish_error:
                try:
                    handler(result.seq, err)
                except Exception:
                    log.exception("publish error callback failed")

    def _failed(self, job, err):
        with self._wake:
            self._counts["failed"] += 1
            failed = self._counts["failed"]
            now = time.monotonic()  # three threads fail jobs: the prepare thread, the worker, the publish thread
            due = now - self._last_log >= LOG_INTERVAL_S
            if due:
                self._last_log = now
        if due:
            log.error("window %d failed (%d failures so far): %r", job.seq, failed, err, exc_info=err)
        for callback in self._on_error:
            try:
                callback(job.seq, err)
            except Exception:
                log.exception("error callback failed")


def new_map(config):
    """The empty mapping.TsdfMap a PipelineConfig describes."""
    return TsdfMap(config.voxel_size, config.truncation, config.max_weight, max(1, config.max_voxels // VOXELS),
                   config.max_range, config.min_weight, config.truncation_ratio)


def _check(config):
    if config.queue_size < 1:
        raise ValueError(f"queue_size must be >= 1, got {config.queue_size}")
    if not 0 <= config.confidence_quantile < 1:
        raise ValueError(f"confidence_quantile must be in [0, 1), got {config.confidence_quantile}")
    if config.map_insert not in MAP_INSERT:
        raise ValueError(f"map_insert must be one of {MAP_INSERT}, got {config.map_insert!r}")
