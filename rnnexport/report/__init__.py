"""Reports of a verification for people and machines: terminal and Markdown text, HTML, JUnit, ONNX test data."""
