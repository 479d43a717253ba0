"""The build: the hot modules setup.py lists are the compiled ones that get imported."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
from pathlib import Path

import pytest

_SETUP = Path(__file__).resolve().parent.parent / "setup.py"


def compiled_modules() -> list[str]:
    """setup.py's _COMPILED, as module names."""
    for node in ast.parse(_SETUP.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "_COMPILED" for target in node.targets
        ):
            paths = ast.literal_eval(node.value)
            return [path.removesuffix(".py").replace("/", ".") for path in paths]
    raise AssertionError("setup.py has no _COMPILED list")


def test_setup_lists_the_per_request_modules() -> None:
    names = compiled_modules()
    assert "fastproxy.server.connection" in names and "fastproxy.server.upstream" in names
    for name in names:
        assert importlib.util.find_spec(name) is not None, name


@pytest.mark.skipif(bool(os.environ.get("FASTPROXY_PURE_PYTHON")), reason="built without mypyc")
def test_the_listed_modules_run_compiled() -> None:
    # An extension module is found before the .py beside it; a build that silently skipped
    # mypyc would leave every request on the interpreted path.
    for name in compiled_modules():
        module = importlib.import_module(name)
        assert module.__file__ is not None and not module.__file__.endswith(".py"), name
