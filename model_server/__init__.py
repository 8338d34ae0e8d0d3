"""Embedded TF-Serving-compatible model server and the digit CNN it serves.

`python -m model_server train` trains and exports the model; `python -m model_server serve`
serves every model under a base directory over TF Serving's REST and gRPC APIs. Importing
this package does not import TensorFlow; the sub-modules that need it import it lazily.

Modules: `server` and `__main__` (start-up), `rest` and `grpc_service` (the two front doors),
`core` (what both serve), `registry` (model versions) and `servables` (one loaded version),
`batching`, `monitoring`, `status` (TF Serving's status codes); REST bodies: `rest_json`
(requests), `fastpath`, `tensors`, `responses`, `proto_json`; `training` and `data` (the
digit model).
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
