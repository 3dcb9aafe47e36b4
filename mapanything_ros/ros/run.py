"""The node's process (console script `mapanything_node`): stop signals handled from the first
instant, the executor loop, and shutdown in order.

SIGINT, SIGTERM and SIGHUP all stop the node in order once it runs (main). Before that, while
importing or starting up (loading weights can take a while), there is nothing to keep: the
process exits at once with code 0. This module imports only the standard library at load time.
"""

import ctypes
import logging
import os
import signal
import sys
import threading
import time
import traceback

STOP_GRACE_S = 1.0  # at a stop signal, how long the inference in progress may take to end
ANSWER_S = 2.0  # then how long a ~/save_map or ~/load_map whose work has ended may take to be answered

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def numpy_on_one_thread():
    """Load numpy with its OpenBLAS on one thread, and leave the setting to nothing else.

    numpy's OpenBLAS runs any large enough product on a thread per core and lets those threads
    spin between calls: 8 % of a core of the node at four cameras (perf: blas_thread_server), for
    the (N, 3) x (3, 3) products of the geometry, which gain nothing from threads (bench_node,
    four 640x480 cameras, one run each: node CPU 143 % -> 135 %, windows the same). OpenBLAS reads
    OPENBLAS_NUM_THREADS as it loads, so it is set for numpy's import only: torch (whose own BLAS
    may be an OpenBLAS on aarch64) and child processes do not see it. Nothing happens once numpy
    is loaded or where the user set OPENBLAS_NUM_THREADS."""
    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        del os.environ["OPENBLAS_NUM_THREADS"]


class Stop:
    """The stop request of the process: `event` is set by a stop signal; before `running()` is
    called a stop signal ends the process at once (exit 0), and so does a second one during the
    orderly stop (exit 1: the user insisted, something may have been left unfinished), if it
    comes more than REPEAT_S after the first: Ctrl-C in the terminal of `ros2 launch` reaches the
    node twice at once, from the terminal and forwarded by launch."""

    REPEAT_S = 1.0

    def __init__(self):
        self.event = threading.Event()
        self._running = False
        self._first = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def running(self):
        self._running = True

    def _on_signal(self, *_):
        if not self._running:
            os._exit(0)
        if self._first is None:
            self._first = time.monotonic()
        elif time.monotonic() - self._first > self.REPEAT_S:
            _flush()
            os._exit(1)
        self.event.set()


def _flush():
    """Flush Python's and C's standard streams (rcutils logs through C stdio, which os._exit does
    not flush)."""
    sys.stdout.flush()
    sys.stderr.flush()
    ctypes.CDLL(None).fflush(None)


def node():
    """Run the node (main) with the stop signals handled from the start."""
    main(stop=Stop())


def lifecycle_node():
    """Run the managed node (main, managed=True) with the stop signals handled from the start."""
    main(stop=Stop(), managed=True)


class _DebugHandler(logging.Handler):
    """python logging records (tracebacks included) to an rclpy logger at DEBUG."""

    def __init__(self, logger):
        super().__init__(logging.DEBUG)
        self.logger = logger
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record):
        self.logger.debug(self.format(record))


def answer_pending(node, executor, timeout_s):
    """Spin `executor` until the node's ~/save_map or ~/load_map request in progress, if any, is
    answered (its work ran on the map thread, which shutdown() joined; the answer goes out on the
    executor), for at most timeout_s: a stop or the shutdown transition left it unanswered, and a
    client without a timeout waited for ever. Inputs that arrive meanwhile reach a stopped pipeline."""
    end = time.monotonic() + timeout_s
    while node.map_file_busy and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)


def main(argv=None, stop=None, managed=False):
    """Run the node (`mapanything_node --ros-args -p cameras:=[front] ...`) until a stop signal.

    The stop is in order: the executor (no more inputs), then the pipeline's threads (the window
    being made ends after its current stage, unpublished), then the node and ROS. rclpy's own
    signal handler would shut ROS down first, under the threads' feet. An inference that has not
    ended STOP_GRACE_S after the signal (a large window on a CPU can take minutes, and a running
    torch call cannot be cut short) is abandoned: after ROS is shut down the process exits at
    once with code 0 (letting the interpreter finalise under a thread still in torch aborts it).
    stop: a Stop made before the heavy imports (node()'s), else one is made here. managed: the
    lifecycle node (MapAnythingLifecycleNode), which waits unconfigured for its transitions."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from .node import GIL_SWITCH_S, MapAnythingLifecycleNode, MapAnythingNode

    stop = stop or Stop()
    sys.setswitchinterval(GIL_SWITCH_S)
    try:
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as err:  # rcl refused the command line (a remap, --log-level): our line beside rcl's
        print(f"mapanything node: ROS cannot start with these arguments: {' '.join(str(err).split())}",
              file=sys.stderr)
        raise SystemExit(2) from None
    node = MapAnythingLifecycleNode(when_finalized=stop.event.set) if managed else MapAnythingNode()
    package_log = logging.getLogger("mapanything_ros")  # the node reports those events itself
    package_log.addHandler(_DebugHandler(node.get_logger().get_child("python")))
    package_log.propagate = False
    executor = SingleThreadedExecutor()  # measured against the others: bench/bench_executor.py
    executor.add_node(node)
    stop.running()
    code = 0
    try:
        while not stop.event.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    except Exception:  # a bug: said with its traceback, exit 1, whatever happens below
        node.get_logger().fatal("the node failed:\n" + traceback.format_exc())
        code = 1
    finally:
        stopped = node.shutdown(timeout=STOP_GRACE_S)
        if not stopped:
            node.get_logger().info("stopping: the inference in progress is abandoned")
        answer_pending(node, executor, ANSWER_S)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        if code or not stopped:
            _flush()
            os._exit(code)
