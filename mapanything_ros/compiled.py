"""The package's compiled modules (mapanything_ros/_*.c) and what runs where one is not built.

CMakeLists.txt builds them (colcon; tools/dev's environment) and setup.py builds them for pip
installs from the same sources and options. Each has numpy (or OpenCV) code beside it that gives
the same results, several times slower: at one 640x480 camera, all six missing, the work outside
the network takes about 4x the CPU time (docs/development.md#the-compiled-modules). missing()
says which did not import, so that a node or a replay can say so at start.
"""

import importlib

# module -> the work its fallback does instead
MODULES = {
    "_pack_cloud": "point clouds packed by OpenCV",
    "_tsdf_fuse": "the map's fusion in numpy",
    "_tsdf_extract": "the map's surface, mesh and occupancy searches in numpy",
    "_resample": "the native-resolution depth and points in numpy",
    "_sparse_depth": "the LiDAR's motion compensation and projection in numpy",
    "_lens": "the lens models' rays in numpy",
}


def missing() -> dict[str, str]:
    """{module: the work its fallback does} of the compiled modules that do not import here."""
    out = {}
    for name, fallback in MODULES.items():
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ImportError:
            out[name] = fallback
    return out


def warning() -> str | None:
    """One line naming the compiled modules that are not built and what runs instead; None when all are."""
    gone = missing()
    if not gone:
        return None
    return (f"compiled modules not built: {', '.join(gone)}; {'; '.join(gone.values())} instead, several times "
            "slower (build the package with colcon, or pip install it where a C compiler is present)")
