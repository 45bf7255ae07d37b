"""Artifacts: the build stages composed into folders (model, weights, manifest), index.json, shards, and what
`verify` takes as targets."""
