"""The node's parameters declared on an rclpy Node, with descriptors (the specs: settings.SPECS).

READ_ONLY parameters need a restart (rclpy itself refuses to change them at run time); the
lifecycle node declares them writable and takes them at configure (it refuses them once configured).
The others are declared with dynamic typing, so that their type is checked by `refusal` in the
node's on-set callback, with a readable reason, like their values (settings.check). Numeric
ranges are declared with FloatingPointRange / IntegerRange where they are closed; open bounds
(> 0) and choices are checked by settings.check (also at start-up).
"""

import sys

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterUninitializedException)
from rclpy.parameter import Parameter

from ..settings import SPECS, check, short_repr

_REQUIRED_TYPES = {"string_array": Parameter.Type.STRING_ARRAY}  # type of a parameter without default
_TYPE_NAMES = {Parameter.Type.BOOL: "bool", Parameter.Type.INTEGER: "integer", Parameter.Type.DOUBLE: "double",
               Parameter.Type.STRING: "string", Parameter.Type.BYTE_ARRAY: "byte_array",
               Parameter.Type.BOOL_ARRAY: "bool_array", Parameter.Type.INTEGER_ARRAY: "integer_array",
               Parameter.Type.DOUBLE_ARRAY: "double_array", Parameter.Type.STRING_ARRAY: "string_array"}


def descriptor(name, spec, writable=False):
    """ParameterDescriptor of a Spec (closed numeric ranges as Floating/IntegerRange); writable: a
    restart parameter declared writable (the lifecycle node), its type checked by `refusal`."""
    read_only = spec.read_only and not writable
    d = ParameterDescriptor(name=name, description=spec.description, read_only=read_only,
                            dynamic_typing=not read_only and spec.default is not None)  # (rclpy types a required one)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    elif spec.multiple_of:
        d.additional_constraints = f"multiple of {spec.multiple_of}"
    elif spec.low_open:  # (ROS ranges are closed: the bounds go in words)
        d.additional_constraints = f"> {spec.low}" + (f" and <= {spec.high}" if spec.high is not None else "")
    if spec.low is not None and not spec.low_open:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                            step=spec.multiple_of or 1)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                         to_value=min(float(spec.high), sys.float_info.max))]
    return d


def declare(node, writable=False):
    """Declare every parameter on `node` (writable: restart ones too, see descriptor). Returns
    ({name: value} (None for a required one left unset), {name: problem}): a start-up value that
    rclpy refuses (wrong type, out of a declared range) is not raised but listed, so that the node
    can report it."""
    values, problems = {}, {}
    for name, spec in SPECS.items():
        value = _REQUIRED_TYPES[spec.type_] if spec.default is None else spec.default
        try:
            node.declare_parameter(name, value, descriptor(name, spec, writable))
        except (InvalidParameterTypeException, InvalidParameterValueException) as err:
            given = getattr(node._parameter_overrides.get(name), "value", None)
            if spec.type_name == "string_array" and isinstance(given, str):
                err = f"got the string {short_repr(given)}; give a list, e.g. {name}:=\"[{given}]\""
            problems[name] = f"parameter {name} ({spec.type_name}): {err}"
            node.declare_parameter(name, value, descriptor(name, spec, writable), ignore_override=True)
        values[name] = _value(node, name)
        if values[name] is None:  # a required one left unset (settings.problems says so)
            continue
        refused = refusal(node.get_parameter(name))
        if refused is not None:
            problems[name] = f"parameter {name}: {refused.reason}"
            values[name] = spec.default
    return values, problems


def current(node):
    """{name: value} of the declared parameters now (None for a required one unset)."""
    return {name: _value(node, name) for name in SPECS}


def _value(node, name):
    try:
        param = node.get_parameter(name)
    except ParameterUninitializedException:
        return None
    return None if param.type_ == Parameter.Type.NOT_SET else param.value


def refusal(param):
    """A failed SetParametersResult with a readable reason when the rclpy Parameter `param` has the
    wrong type or a value settings.check refuses, else None (unknown names are left to rclpy, and
    read-only ones, which it refuses first; a parameter cannot be unset)."""
    spec = SPECS.get(param.name)
    given = _TYPE_NAMES.get(param.type_)
    if spec is None:
        return None
    if given is None:
        reason = f"{param.name} cannot be unset: give a {spec.type_name}"
    elif given != spec.type_name:
        hint = " (write it with a decimal point, e.g. 1.0)" if (given, spec.type_name) == ("integer", "double") else ""
        reason = f"{param.name} must be a {spec.type_name}, got the {given} {short_repr(param.value)}{hint}"
    else:
        reason = check(param.name, param.value)
    return None if reason is None else SetParametersResult(successful=False, reason=reason)

