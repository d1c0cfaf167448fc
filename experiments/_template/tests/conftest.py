from pathlib import Path

import pytest

from shared.runner import reproduce

NAME = Path(__file__).resolve().parents[1].name


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke reproduction shared by the tests of this folder."""
    return reproduce(NAME, "smoke", ["trainer.threads=1"], outputs=tmp_path_factory.mktemp("outputs"))
