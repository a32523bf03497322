"""The distribution installs as a LlamaHub-style namespace package next to llama-index-core."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

from llama_index.core.postprocessor.types import BaseNodePostprocessor

ROOT = Path(__file__).resolve().parents[1]


def test_namespace_layout_has_no_parent_init_files():
    assert not (ROOT / "llama_index" / "__init__.py").exists()
    assert not (ROOT / "llama_index" / "postprocessor" / "__init__.py").exists()
    assert (ROOT / "llama_index" / "postprocessor" / "attribot" / "__init__.py").exists()


def test_installed_next_to_llama_index_core(tmp_path):
    # A fresh interpreter outside the repository: only the (editable) install can resolve it.
    code = (
        "import importlib.util, llama_index.core\n"
        "spec = importlib.util.find_spec('llama_index.postprocessor.attribot')\n"
        "print(spec.origin)\n"
        "print(llama_index.core.__file__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    assert Path(out[0]).resolve() == (ROOT / "llama_index" / "postprocessor" / "attribot" / "__init__.py").resolve()
    assert "site-packages" in out[1]


def test_distribution_metadata_and_class():
    from llama_index.postprocessor.attribot import AttriBoTPostprocessor

    dist = distribution("llama-index-postprocessor-attribot")
    requires = " ".join(dist.requires or [])
    assert "llama-index-core" in requires and "attribot-rag" in requires
    assert "extra == 'test'" in requires.replace('"', "'")
    assert BaseNodePostprocessor.__name__ in [b.__name__ for b in AttriBoTPostprocessor.__mro__]
    assert AttriBoTPostprocessor.class_name() == "AttriBoTPostprocessor"
