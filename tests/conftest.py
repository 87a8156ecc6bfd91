"""Shared fixtures: the GPU marker rule and a fresh config per test."""

import pytest


def pytest_collection_modifyitems(config, items):
    try:
        import torch  # noqa: F401 - only to ask whether a GPU is there

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
