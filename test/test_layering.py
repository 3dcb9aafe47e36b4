"""The package's layering, read from its import statements (ast, nothing imported): ROS only in ros/,
no import cycle between modules, the node free of the player and the synthetic scene."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mapanything_ros"
ROS = ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "tf2_msgs", "tf2_ros", "diagnostic_msgs",
       "rcl_interfaces", "std_srvs", "builtin_interfaces", "rosgraph_msgs", "launch", "launch_ros")


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path, top_level_only):
    """Absolute names imported by a module (relative imports resolved); with top_level_only, only
    the imports run when the module is imported (not those inside functions)."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def package_imports(name, top_level_only=True):
    return {m for m in imports(MODULES[name], top_level_only) if m in MODULES and m != name}


def test_ros_only_in_the_ros_layer():
    for name, path in MODULES.items():
        if name.startswith(("mapanything_ros.ros", "mapanything_ros.msg")):
            continue
        ros = sorted(m for m in imports(path, top_level_only=False) if m.split(".")[0] in ROS)
        assert not ros, f"{name} imports {ros}"


def test_no_import_cycle():
    graph = {name: package_imports(name) for name in MODULES}
    done, stack = set(), []

    def visit(name):
        if name in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(name):] + [name]))
        if name in done:
            return
        stack.append(name)
        for dep in graph[name]:
            if not name.startswith(dep + "."):  # a package's __init__ importing its own modules is not a cycle
                visit(dep)
        stack.pop()
        done.add(name)

    for name in graph:
        visit(name)


def test_the_node_and_the_session_do_not_import_the_player_or_the_scene():
    for name in ("mapanything_ros.ros.node", "mapanything_ros.session.session", "mapanything_ros.session.inputs"):
        seen, todo = set(), [name]
        while todo:
            current = todo.pop()
            for dep in package_imports(current):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        bad = sorted(m for m in seen if m.startswith(("mapanything_ros.ros.player", "mapanything_ros.synthetic",
                                                      "mapanything_ros.replay", "mapanything_ros.bag")))
        assert not bad, f"{name} imports {bad}"
