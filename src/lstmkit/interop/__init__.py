"""Interoperability: ONNX export (:mod:`lstmkit.interop.onnx`) and Keras 3 model files
(:mod:`lstmkit.interop.keras_files`).

Importing this package needs neither ``onnx``/``onnxruntime`` nor ``h5py``: each submodule imports
what it needs when a function needs it, and says which extra to install when it is missing.
"""

__all__ = ["keras_files", "onnx"]
