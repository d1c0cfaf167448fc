import pytest


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M (about 15 s to load), shared by this folder's tests."""
    from ..model import load_smollm2

    return load_smollm2()
