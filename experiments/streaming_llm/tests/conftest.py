import pytest


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M (about 15 s to load), shared by this folder's tests."""
    from experiments.streaming_llm.model import load_smollm2

    return load_smollm2()
