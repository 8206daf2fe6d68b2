"""Interoperability: ONNX export (:mod:`lstmkit.interop.onnx`). Keras 3 model files are
:mod:`lstmkit.keras`'s.

Importing this package needs neither ``onnx`` nor ``onnxruntime``: the submodule imports what it
needs when a function needs it, and says which extra to install when it is missing.
"""

__all__ = ["onnx"]
