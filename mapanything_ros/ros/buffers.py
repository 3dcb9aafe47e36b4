"""Message byte buffers that rclpy adopts without a copy.

A generated rclpy message's `uint8[]` setter copies what it is given (array.array('B', value): a
memcpy for array.array and bytes, element by element for numpy arrays and memoryviews) unless the
message was made with `check_fields=True`: then an array.array('B') is adopted as it is. Messages
generated before `check_fields` existed (Humble, Iron) always adopt an array.array. So a builder
allocates the array.array once (encode.byte_buffer), fills it through a numpy view and hands it
over.
"""


def adopting(msg_type):
    """Constructor keywords of `msg_type` under which its byte sequences adopt an array.array('B')."""
    return {"check_fields": True} if "_check_fields" in msg_type.__slots__ else {}

