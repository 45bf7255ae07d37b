"""Reading ONNX files: the one reader, every subgraph and input role, lint and inspect."""
