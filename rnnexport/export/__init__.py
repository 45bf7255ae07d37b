"""Export: PyTorch modules and users' weights → ONNX graphs (native recurrent nodes, masked ragged graphs,
deployment variants, PyTorch's own exporters for comparison, whole models)."""
