"""The torch boundary: the only package allowed to use torch and transformers.

Everything here is imported lazily, from inside the functions that need a
model, so that the ingest path and the daemon without the `embeddings` extra
never pay for (or depend on) torch. Do not import torch at module level here.
"""
