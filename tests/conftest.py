"""Shared test set-up: tests marked `gpu` are skipped without a CUDA device; the
tiny real models (`tiny_models`) built once per session."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """The tiny real models of monitor.eval.tiny (a base Llama, LoRA adapters and a
    full fine-tune, with a registry and golden sets): the repository's
    `.cache/tiny` when it holds a build of the current builder version (`python -m
    monitor.eval.tiny` makes one), else built once for the session (about a
    minute and a half on one CPU core). Tests must not write into it: copy it."""
    from monitor.eval import tiny

    cached = REPO / ".cache" / "tiny"
    if tiny._stamp_ok(cached):
        return tiny.build(cached, log=lambda line: None)
    return tiny.build(tmp_path_factory.mktemp("tiny") / "tiny")
