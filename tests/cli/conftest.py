"""Command-line test fixtures."""

import pytest

from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.library import Library
from stance_studio.core.tiny import tiny_base


@pytest.fixture
def lib(tmp_path, deltas_factory):
    """A library folder holding one low-rank stance ``a`` made on the tiny model (test
    files that need other stances define their own ``lib``)."""
    base = tiny_base()
    library = Library(tmp_path / "lib")
    library.save(make_checkpoint("a", deltas_factory(base, rank=2, scale=0.3), base, training={"method": "lora"}))
    return library.folder
