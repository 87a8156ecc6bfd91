"""Shared test set-up: tests marked `gpu` are skipped without a CUDA device."""

import pytest


def _has_gpu() -> bool:
    try:
        import torch
    except Exception:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    # torch is imported only when a gpu test was collected: the ingest tests never load it.
    if gpu_items and not _has_gpu():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


from tests.receiver import receivers  # noqa: E402,F401  (fixture: local HTTP receivers)
