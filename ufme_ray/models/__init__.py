"""The models UFME-Ray knows: the manifest (with each embedder's calibration) and the file store.

A leaf package: it imports nothing from vision, serving, calibration or the CLI, and neither
Ray nor FastAPI, so the CLI, the vision loaders and the jobs can all depend on it.
"""
