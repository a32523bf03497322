"""Every public name of the three distributions imports, each version is its installed
metadata's, and importing the core or its command line loads neither torch nor an integration's
framework (no model)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import version

import pytest

PACKAGES = {
    "attribot_rag": "attribot-rag",
    "langchain_attribot": "langchain-attribot",
    "llama_index.postprocessor.attribot": "llama-index-postprocessor-attribot",
}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_imports(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, package
    assert len(set(module.__all__)) == len(module.__all__), "a name is listed twice"
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package}.__all__ names what it lacks: {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_version_is_the_installed_metadata(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__version__ == version(PACKAGES[package])
    assert module.__version__ != "0.0.0+unknown"


def test_core_and_cli_import_no_heavy_framework() -> None:
    code = (
        "import sys, attribot_rag, attribot_rag.api.options, attribot_rag.api.results, attribot_rag.core.spans\n"
        "from attribot_rag.cli import build_parser\n"
        "build_parser()\n"
        "heavy = ['torch', 'transformers', 'langchain_core', 'llama_index', 'ray', 'fastapi']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_name_is_an_attribute_error() -> None:
    import attribot_rag

    with pytest.raises(AttributeError, match="no attribute 'Attributer'"):
        attribot_rag.Attributer  # noqa: B018
