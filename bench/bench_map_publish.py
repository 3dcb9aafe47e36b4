"""How long a ~/map tick holds the node's executor, side by side in one run: packing the map on the
executor (the node's timer before issue 17: snapshot + PointCloud2 packing + publish, i.e.
MapAnythingNode.publish_map called in the timer) against handing it to the map thread (the timer
now: MapAnythingNode._on_output_timer), at several map sizes. Also the time the map thread then
needs, which no longer delays inputs, and a tick once the map has not changed since it was
published (nothing is made again: the topics are latched); and for ~/mesh (map thread): the mesh extraction, the
MarkerArray of every region serialized by ros/marker.py against the same array built as rclpy
message objects and serialized (the reference), and the publish of the bytes.

The node runs in-process with the oracle backend, a subscriber on ~/map, and a map holding a flat
floor of about --sizes surface points (its TSDF blocks loaded directly). The map thread's time is
the surface extraction from the whole volume (as after a load; after a fusion or an eviction
only the blocks it changed and their neighbours are searched again: bench/bench_surface.py,
bench/bench_eviction.py) plus the packing.

Fusion's wait: while the map thread makes the surface (Pipeline.map_points) or the occupancy grid
(Pipeline.occupancy) by a whole search, a thread standing in for fusion takes the map lock every
millisecond; its longest wait, with the search on a copy of the map (now) against the search
under the lock (as before 2026-12-06), side by side.

    tools/dev run python bench/bench_map_publish.py [--sizes 200000 2000000] [--repeats 10] [--json PATH]
"""

import argparse
import json
import threading
import time

import numpy as np


def measure(size, repeats):
    import rclpy
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import PointCloud2

    from mapanything_ros.mapping.regions import MeshUpdates
    from mapanything_ros.ros.marker import mesh_markers
    from mapanything_ros.ros.node import MapAnythingNode

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = MapAnythingNode(context=context, parameter_overrides=[
        Parameter("cameras", value=["front_optical"]), Parameter("backend", value="oracle"),
        Parameter("oracle_preset", value="small"), Parameter("map_publish_rate", value=0.0),
        Parameter("map_max_voxels", value=max(8 * size, 1000))])
    peer = rclpy.create_node("peer", context=context)
    received = []
    peer.create_subscription(PointCloud2, "/mapanything/map", received.append, 1)
    end = time.monotonic() + 10
    while not node.map_pub.get_subscription_count() and time.monotonic() < end:
        time.sleep(0.05)
    volume = node.session.pipeline.map
    volume.load_state(floor_state(volume, size))
    inline, handoff, thread = [], [], []
    for _ in range(repeats):
        volume._surface = None  # searched whole each time (see the module doc)
        t = time.perf_counter()
        node.publish_map({"map": None})  # the old timer: all of it on the executor
        inline.append(time.perf_counter() - t)
        node._sent.clear()  # as after a fusion: the map is due again
        volume._surface = None
        t = time.perf_counter()
        node._on_output_timer("map")  # the timer now: the executor only submits
        handoff.append(time.perf_counter() - t)
        node._output_jobs["map"].result()
        thread.append(time.perf_counter() - t)
    t = time.perf_counter()
    node._on_output_timer("map")  # the map has not changed since: nothing to do
    unchanged = time.perf_counter() - t
    waits = fusion_waits(node.session.pipeline, repeats)
    assert node._output_jobs["map"].done()
    mesh = {"extract": [], "cdr": [], "objects": [], "publish": []}
    for _ in range(max(1, repeats // 3)):
        volume._mesh = None  # meshed whole each time, as the surface
        t = time.perf_counter()
        regions, frame_id, stamp = node.session.mesh(0)
        mesh["extract"].append(time.perf_counter() - t)
        t = time.perf_counter()
        data = mesh_markers(regions, MeshUpdates().update(regions), frame_id, stamp)  # every region
        mesh["cdr"].append(time.perf_counter() - t)
        t = time.perf_counter()
        marker_objects(regions, frame_id)
        mesh["objects"].append(time.perf_counter() - t)
        t = time.perf_counter()
        node.mesh_pub.publish(data)
        mesh["publish"].append(time.perf_counter() - t)
    node.shutdown()
    node.destroy_node()
    peer.destroy_node()
    rclpy.shutdown(context=context)
    ms = lambda v: 1e3 * float(np.median(v))  # noqa: E731
    return {"points": len(volume.surface()[0]), "blocks": len(volume), "executor_ms_packing_inline": ms(inline),
            "executor_ms_handoff": ms(handoff), "map_thread_ms": ms(thread), "tick_ms_unchanged_map": 1e3 * unchanged,
            "triangles": int(regions.signatures[:, 1].sum()),
            "mesh_extract_ms": ms(mesh["extract"]), "mesh_marker_cdr_ms": ms(mesh["cdr"]),
            "mesh_marker_objects_ms": ms(mesh["objects"]), "mesh_publish_ms": ms(mesh["publish"]), **waits}


def fusion_waits(pipeline, repeats):
    """{figure: ms}: the longest wait for the map lock of a thread taking it every millisecond while
    a whole surface or grid is made, on a copy (Pipeline.map_points / .occupancy) and under the lock
    (the same search as the map's own: what those did before); medians over `repeats`; and the
    calls' own time."""
    volume, band = pipeline.map, (-0.5, 0.5)

    def under_lock(search):
        with pipeline._map_lock:
            search()

    cases = {"surface_copy": lambda: pipeline.map_points(), "surface_lock": lambda: under_lock(volume.surface),
             "grid_copy": lambda: pipeline.occupancy(*band),
             "grid_lock": lambda: under_lock(lambda: volume.occupancy(*band))}
    out = {}
    for name, call in cases.items():
        waited, took = [], []
        for _ in range(repeats):
            volume._surface = volume._columns = None  # searched whole (see the module doc)
            longest, stop, probing = [0.0], threading.Event(), threading.Event()

            def probe():
                while not stop.is_set():
                    t = time.perf_counter()
                    with pipeline._map_lock:
                        longest[0] = max(longest[0], time.perf_counter() - t)
                    probing.set()
                    time.sleep(0.001)

            prober = threading.Thread(target=probe)
            prober.start()
            probing.wait()  # the prober runs before the call starts
            t = time.perf_counter()
            call()
            took.append(time.perf_counter() - t)
            stop.set()
            prober.join()
            waited.append(longest[0])
        out[f"fusion_wait_ms_{name}"] = 1e3 * float(np.median(waited))
        out[f"call_ms_{name}"] = 1e3 * float(np.median(took))
    return out


def marker_objects(mesh, frame_id):
    """The same MarkerArray (a TRIANGLE_LIST per region) as rclpy message objects, serialized (the
    reference ros/marker.py replaces)."""
    from geometry_msgs.msg import Point
    from rclpy.serialization import serialize_message
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    out = MarkerArray()
    for r in range(len(mesh)):
        corners = mesh.region(r).reshape(-1)
        msg = Marker(type=Marker.TRIANGLE_LIST, id=r, ns="map_mesh")
        msg.header.frame_id = frame_id
        msg.points = [Point(x=x, y=y, z=z) for x, y, z in mesh.vertices[corners].astype(float).tolist()]
        msg.colors = [ColorRGBA(r=r, g=g, b=b, a=1.0) for r, g, b in (mesh.colours[corners] / 255.0).tolist()]
        out.markers.append(msg)
    return serialize_message(out)


def floor_state(volume, points, layer=0, start=0):
    """A TsdfMap state of a flat floor (z = 0.1 m above the layer of blocks `layer`) seen
    everywhere, about `points` surface points: one layer of blocks from block `start` on in x and
    y, each crossed by the floor, BLOCK² surface points a block."""
    from mapanything_ros.mapping.keys import pack
    from mapanything_ros.mapping.tsdf import _OFFSETS, BLOCK, VOXELS

    side = int(np.ceil(np.sqrt(points / BLOCK**2)))
    ij = start + np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)
    cells = np.column_stack([ij, np.full(len(ij), layer, np.int64)])
    keys = pack(cells.T.copy())
    order = np.argsort(keys)
    z = (_OFFSETS[:, 2] + 0.5) * volume.voxel_size
    tsdf = np.clip((z - 0.1) / volume.truncation, -1, 1).astype(np.float32)
    state = volume.state()
    n = len(keys)
    state.update(keys=keys[order], tsdf=np.tile(tsdf, (n, 1)), weight=np.ones((n, VOXELS), np.float32),
                 rgb=np.full((n, VOXELS, 3), 128, np.uint8), looks=np.ones((n, VOXELS), np.uint8),
                 front=np.ones((n, VOXELS), bool))
    return state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    rows = [measure(size, args.repeats) for size in args.sizes]
    print("| map surface points (blocks) | executor held, packing inline (ms) | executor held, hand-off (ms) | ratio | "
          "map thread (ms) | tick, map unchanged since (ms) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['points']:,} ({r['blocks']:,}) | {r['executor_ms_packing_inline']:.1f} | {r['executor_ms_handoff']:.3f} | "
              f"{r['executor_ms_packing_inline'] / r['executor_ms_handoff']:.0f}x | {r['map_thread_ms']:.1f} | "
              f"{r['tick_ms_unchanged_map']:.3f} |")
    print("\n| triangles | mesh extraction (ms) | MarkerArray as CDR bytes (ms) | as message objects (ms) | ratio | "
          "publish (ms) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['triangles']:,} | {r['mesh_extract_ms']:.0f} | {r['mesh_marker_cdr_ms']:.1f} | "
              f"{r['mesh_marker_objects_ms']:.0f} | {r['mesh_marker_objects_ms'] / r['mesh_marker_cdr_ms']:.0f}x | "
              f"{r['mesh_publish_ms']:.1f} |")
    print("\n| map surface points (blocks) | fusion's longest wait, surface on a copy / under the lock (ms) | "
          "the surface's call (ms) | grid on a copy / under the lock (ms) | the grid's call (ms) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['points']:,} ({r['blocks']:,}) | {r['fusion_wait_ms_surface_copy']:.1f} / "
              f"{r['fusion_wait_ms_surface_lock']:.1f} | {r['call_ms_surface_copy']:.0f} / {r['call_ms_surface_lock']:.0f} | "
              f"{r['fusion_wait_ms_grid_copy']:.1f} / {r['fusion_wait_ms_grid_lock']:.1f} | "
              f"{r['call_ms_grid_copy']:.0f} / {r['call_ms_grid_lock']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
