"""The build: the hot modules setup.py lists are the compiled ones that get imported."""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
_PURE = os.environ.get("FASTPROXY_PURE_PYTHON", "").lower() in ("1", "true", "yes")  # as setup.py


def compiled_modules() -> list[str]:
    """setup.py's _COMPILED, as module names."""
    for node in ast.parse((_ROOT / "setup.py").read_text()).body:
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


def test_the_listed_modules_run_as_built_and_up_to_date() -> None:
    # An extension module is found before the .py beside it: a build that silently skipped mypyc
    # would leave every request on the interpreted path, and one older than its .py runs stale
    # code (after editing a compiled module, run scripts/install again).
    for name in compiled_modules():
        # The file the import system picks (a compiled module's own __file__ is mypyc's guess).
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        loaded = Path(spec.origin)
        if _PURE:
            assert loaded.suffix == ".py", f"{name}: a compiled module is left over: {loaded}"
            continue
        assert loaded.suffix != ".py", f"{name} is not compiled"
        # The code is in the group's library; each module's own extension only points to it.
        (library,) = (_ROOT / "fastproxy").glob("_compiled__mypyc.*.so")
        source = _ROOT / (name.replace(".", "/") + ".py")
        assert library.stat().st_mtime >= source.stat().st_mtime, (
            f"{library.name} is older than {source.name}: run scripts/install to rebuild it"
        )


def test_no_extension_shadows_a_module_that_is_not_listed() -> None:
    # A module dropped from the list leaves its extension behind until it is deleted.
    listed = set(compiled_modules())
    for extension in (_ROOT / "fastproxy").rglob("*.so"):
        name = ".".join(extension.relative_to(_ROOT).with_suffix("").with_suffix("").parts)
        if extension.with_name(extension.name.split(".")[0] + ".py").exists():
            assert name in listed, f"{extension} shadows a .py that setup.py does not compile"
