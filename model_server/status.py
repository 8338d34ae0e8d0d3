"""Canonical error codes and the error type every serving path raises.

TF Serving reports failures as an absl status: a canonical code plus a message. The REST
layer maps the code to an HTTP status (`http_server.cc` ToHTTPStatusCode) and the gRPC
layer passes it through unchanged. Both front ends here raise `ServingError` and map it
the same way.
"""

from __future__ import annotations

import enum

import grpc

__all__ = ["Code", "ServingError"]


class Code(enum.Enum):
    """Canonical status codes with their HTTP and gRPC equivalents."""

    OK = (200, grpc.StatusCode.OK)
    CANCELLED = (499, grpc.StatusCode.CANCELLED)
    UNKNOWN = (500, grpc.StatusCode.UNKNOWN)
    INVALID_ARGUMENT = (400, grpc.StatusCode.INVALID_ARGUMENT)
    DEADLINE_EXCEEDED = (504, grpc.StatusCode.DEADLINE_EXCEEDED)
    NOT_FOUND = (404, grpc.StatusCode.NOT_FOUND)
    ALREADY_EXISTS = (409, grpc.StatusCode.ALREADY_EXISTS)
    PERMISSION_DENIED = (403, grpc.StatusCode.PERMISSION_DENIED)
    RESOURCE_EXHAUSTED = (429, grpc.StatusCode.RESOURCE_EXHAUSTED)
    FAILED_PRECONDITION = (400, grpc.StatusCode.FAILED_PRECONDITION)
    ABORTED = (409, grpc.StatusCode.ABORTED)
    OUT_OF_RANGE = (400, grpc.StatusCode.OUT_OF_RANGE)
    UNIMPLEMENTED = (501, grpc.StatusCode.UNIMPLEMENTED)
    INTERNAL = (500, grpc.StatusCode.INTERNAL)
    UNAVAILABLE = (503, grpc.StatusCode.UNAVAILABLE)
    DATA_LOSS = (500, grpc.StatusCode.DATA_LOSS)
    UNAUTHENTICATED = (401, grpc.StatusCode.UNAUTHENTICATED)

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers with for this code."""
        return self.value[0]

    @property
    def grpc_code(self) -> grpc.StatusCode:
        """The gRPC status code (the canonical code, unchanged)."""
        return self.value[1]


class ServingError(Exception):
    """A failed request: a canonical code and the exact message TF Serving would give."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    """Shorthand for the most common failure, a 400 INVALID_ARGUMENT."""
    return ServingError(Code.INVALID_ARGUMENT, message)
