"""The bundled SmolLM2-135M-Instruct, loaded once per test session.

The dequantized copy is cached in a session folder, so the first slow test pays
the GGUF load (~20 s) and the rest reuse the model object.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def bundled_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bundled-cache")


@pytest.fixture(scope="session")
def bundled(bundled_cache):
    from stance_studio.core.models import load_base

    old = os.environ.get("STANCE_STUDIO_CACHE")
    os.environ["STANCE_STUDIO_CACHE"] = str(bundled_cache)
    try:
        return load_base(None)
    finally:
        if old is None:
            os.environ.pop("STANCE_STUDIO_CACHE", None)
        else:
            os.environ["STANCE_STUDIO_CACHE"] = old
