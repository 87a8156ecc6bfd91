"""The examples in the docstrings are tests too (STYLE.md): run every module's doctests."""

import doctest
import importlib
import pkgutil

import pytest

import monitor

SKIP = {"monitor.__main__", "monitor.demo.__main__"}  # entry points: importing them runs them
MODULES = sorted(m.name for m in pkgutil.walk_packages(monitor.__path__, "monitor.")
                 if m.name not in SKIP)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
