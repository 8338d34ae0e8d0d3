"""Embedded TF-Serving-compatible model server and the digit CNN it serves.

`python -m model_server train` trains and exports the model; `python -m model_server serve`
serves every model under a base directory over TF Serving's REST and gRPC APIs. Importing
this package does not import TensorFlow; the sub-modules that need it import it lazily.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
