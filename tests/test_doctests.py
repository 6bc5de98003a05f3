"""Every docstring example in the package is true: ``doctest.testmod`` on each module.

The modules are found with ``pkgutil`` (the package itself, ``cli``, and every module under
``nncodec_unify.codec`` and ``nncodec_unify.method``), so a new module is tested without being
listed here. A module is left out only by name in ``EXCLUDED``, with the reason, or skipped
(visibly, as a pytest skip) when it needs torch and torch is not installed.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import nncodec_unify

# Modules not imported by this test, each with its reason. Nothing else is left out.
EXCLUDED = {
    # the ``python -m nncodec_unify`` entry point: importing it runs the CLI and exits
    # (sys.exit(main())); it holds no docstrings, and ``nncodec_unify.cli`` is tested below
    "nncodec_unify.__main__": "importing it runs the command line and exits",
}

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _module_names() -> list[str]:
    names = [nncodec_unify.__name__]
    for info in pkgutil.walk_packages(nncodec_unify.__path__, nncodec_unify.__name__ + "."):
        names.append(info.name)
    return sorted(names)


MODULES = _module_names()


def test_the_walk_finds_the_codec_and_the_method():
    for name in ("nncodec_unify.cli", "nncodec_unify.codec.encoder", "nncodec_unify.codec.integrity",
                 "nncodec_unify.method.unify", "nncodec_unify.method.posttrain", "nncodec_unify.method.admm"):
        assert name in MODULES
    assert set(EXCLUDED) <= set(MODULES), "an exclusion names a module that no longer exists"


@pytest.mark.parametrize("name", [name for name in MODULES if name not in EXCLUDED])
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "torch" and not HAS_TORCH:
            pytest.skip(f"{name} needs torch, which is not installed")
        raise
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see stdout)"


def test_the_examples_are_run():
    """The encoder's and the model digest's examples exist, so the test above checks something."""
    for name in ("nncodec_unify.codec.encoder", "nncodec_unify.codec.integrity"):
        assert doctest.testmod(importlib.import_module(name), report=False).attempted > 0, name
