"""The one check of how many parameters a request carries, shared by every frontend (HTTP JSON, the binary
extension's JSON header, gRPC ModelInfer and ModelStreamInfer): each parameter becomes Python objects (and an
entry of a protobuf map on gRPC), so their number is bounded per request and per input and output tensor.

Imports `errors` and `options`; a pure function, no IO.
"""

from __future__ import annotations

from seawall.errors import InvalidArgumentError
from seawall.options import Limits


def check_parameter_count(count: int, limits: Limits, tensor: str = "", kind: str = "") -> None:
    """Refuse `count` parameters over `limits.max_parameters` (--max-parameters): the request's own when `tensor`
    is empty, else those of the `kind` ("input" or "output") tensor named `tensor`.

    Raises:
        InvalidArgumentError: `request has N parameters, more than the limit of L` (`input 'X' has ...`).
    """
    if count > limits.max_parameters:
        owner = f"{kind} '{tensor}'" if kind else "request"
        raise InvalidArgumentError(f"{owner} has {count} parameters, more than the limit of {limits.max_parameters}")
