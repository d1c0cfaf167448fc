"""Fast paths, each beside a readable torch reference that is its specification.

Layout: ``kernels/<op>/reference.py`` (the spec), the fast path (Triton, gsplat wrapper) registered
as a ``torch.library`` custom op, ``bench.py`` and a README. API: ``op(..., impl="auto" |
"reference" | <fast>)``; ``auto`` falls back to the reference where the fast path cannot run.
Nothing here imports Triton, gsplat or CUDA code at package import time.

Note on the name: the Hugging Face PyPI package ``kernels`` shares it, and transformers probes for
it (``transformers.utils.is_kernels_available``). Our package therefore never defines
``__version__``: transformers then sees no version and keeps its hub-kernel path off
(tests/test_layout.py checks this).
"""
