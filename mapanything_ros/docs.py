"""Markdown tables of the node's parameters, topics, services and TF outputs, from the code.

`python -m mapanything_ros.docs` prints them; `python -m mapanything_ros.docs --write docs/node.md`
rewrites the node reference's section between BEGIN and END (test/test_docs.py checks it is current).
Sources: settings.SPECS and interface.ENDPOINTS / TF_OUTPUTS.
"""

import argparse
import re
import sys
from pathlib import Path

from .interface import ENDPOINTS, QOS, TF_OUTPUTS
from .settings import INF, SPECS

BEGIN = "<!-- BEGIN GENERATED: node-interface -->"
END = "<!-- END GENERATED: node-interface -->"
COMMAND = "python -m mapanything_ros.docs --write docs/node.md"


_PLACEHOLDER = re.compile(r"[^\s(]*<[A-Za-z][^<>]*>[^\s),;]*")  # a name with <x> in it: shown as code


def _cell(text):
    """Text safe inside a markdown table cell: pipes escaped, names with <placeholders> as code."""
    return _PLACEHOLDER.sub(lambda m: f"`{m.group(0)}`", str(text).replace("|", "\\|"))


def _num(x):
    return str(x) if isinstance(x, int) else f"{x:g}"


def _code(text):
    return f"`{text}`" if text != "" else ""


def _value(value):
    """A parameter value as written in a parameter YAML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _range(spec):
    if spec.choices:
        return ", ".join(spec.choices)
    if spec.low is None:
        return ""
    low = f"> {_num(spec.low)}" if spec.low_open else f">= {_num(spec.low)}"
    text = low if spec.high == INF else f"{_num(spec.low)} .. {_num(spec.high)}"
    if spec.low_open and spec.high != INF:
        text = f"{low}, <= {_num(spec.high)}"
    return text + (f", multiple of {spec.multiple_of}" if spec.multiple_of else "")


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _when(item):
    return "; ".join(f"{name}: {' or '.join(values)}" for name, values in item.when.items())


def _pattern(name):
    """A name pattern as shown: {x} -> <x>."""
    return name.replace("{", "<").replace("}", ">")


def parameter_table():
    """Markdown table of every parameter: name, type, default, range or choices, when it may change."""
    rows = [[_code(name), spec.type_name, "required" if spec.default is None else _code(_value(spec.default)),
             _cell(_range(spec)), "restart" if spec.read_only else "runtime", _cell(spec.description)]
            for name, spec in SPECS.items()]
    return _table(["parameter", "type", "default", "range / choices", "changes", "description"], rows)


def endpoint_table(kind):
    """Markdown table of the node's endpoints of one kind ("subscription", "publisher", "service")."""
    rows = []
    for e in ENDPOINTS.values():
        if e.kind != kind:
            continue
        row = [_code(_pattern(e.name)), _code(e.type)]
        if kind != "service":
            row.append(_cell(QOS[e.qos]))
        rows.append(row + [_cell(_when(e)), _cell(e.description)])
    header = ["name", "type"] + ([] if kind == "service" else ["QoS"]) + ["when", "description"]
    return _table(header, rows)


def tf_table():
    """Markdown table of the transforms the node publishes on /tf."""
    rows = [[_code(_pattern(t.parent)), _code(_pattern(t.child)), _cell(_when(t)), _cell(t.description)]
            for t in TF_OUTPUTS.values()]
    return _table(["parent", "child", "when", "description"], rows)


def render():
    """The generated section of docs/node.md (without its BEGIN / END markers)."""
    note = (f"<!-- Generated from mapanything_ros/settings.py and interface.py by `{COMMAND}`; "
            "edit those, not this. -->")
    names = ("`<ns>`: each camera namespace of `cameras`; `<out>`: the same without leading or trailing "
             "slashes; `<parameter>`: that parameter's value; `~/`: the node's namespace and name.")
    return "\n\n".join([
        note,
        "### Parameters",
        "`restart` parameters are read once at start-up (the lifecycle node's at configure: set them "
        "with `ros2 param set` while it is unconfigured); `runtime` ones can be changed with "
        "`ros2 param set` while the node runs.",
        parameter_table(),
        "### Subscribed topics", names, endpoint_table("subscription"),
        "### Published topics", endpoint_table("publisher"),
        "### Services", endpoint_table("service"),
        "### TF published", tf_table(),
    ])


def update(text):
    """`text` (markdown) with the section between BEGIN and END replaced by render(); ValueError without markers."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} ... {END} section")
    return text[:start + len(BEGIN)] + "\n" + render() + "\n" + text[end:]


def main(argv=None):
    """Print the tables, or with --write FILE rewrite FILE's generated section."""
    parser = argparse.ArgumentParser(prog="python -m mapanything_ros.docs", description=__doc__.split("\n")[0])
    parser.add_argument("--write", metavar="FILE", type=Path, help="rewrite the generated section of FILE")
    args = parser.parse_args(argv)
    if args.write is None:
        sys.stdout.write(render() + "\n")
        return
    text = args.write.read_text()
    new = update(text)
    if new != text:
        args.write.write_text(new)
    print(f"{args.write}: {'updated' if new != text else 'up to date'}")


if __name__ == "__main__":
    main()
