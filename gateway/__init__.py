"""Jurisgate: a policy-as-code gateway for Model-as-a-Service in front of TensorFlow Serving."""

__version__ = "0.1.0"

__all__ = ["__version__"]
