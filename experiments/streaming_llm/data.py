"""Long English text that ships with the system: Debian's GNU licence texts (package base-files).

PG-19 is not available offline. GPL-3 alone is about 7.7k SmolLM2 tokens; for streams longer than
the model's 8192-token window the texts are concatenated in a fixed, documented order. The texts
are read at run time and never copied into the repository.
"""

from __future__ import annotations

from pathlib import Path

LICENSES = Path("/usr/share/common-licenses")
# Fixed order for long streams (distinct files only: GPL, LGPL and GFDL are symlinks to these).
LONG_ORDER = ("GPL-3", "GPL-2", "LGPL-2.1", "GFDL-1.3", "LGPL-2", "MPL-1.1", "GFDL-1.2", "MPL-2.0", "GPL-1", "Apache-2.0", "LGPL-3", "CC0-1.0", "Artistic", "BSD")


def read_texts(names: list[str] | tuple[str, ...], root: Path = LICENSES) -> str:
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"text(s) {', '.join(missing)} not found under {root}; they come with Debian's base-files package "
            f"(data.root= points elsewhere; available: {', '.join(sorted(p.name for p in root.glob('*'))) if root.is_dir() else 'none'})"
        )
    return "\n\n".join((root / n).read_text(encoding="utf-8") for n in names)


def token_stream(encode, names, n_tokens: int, root: Path = LICENSES):
    """The first ``n_tokens`` tokens of the named texts, concatenated in order."""
    ids = encode(read_texts(names, root))
    if len(ids) < n_tokens:
        raise ValueError(f"the texts {list(names)} give only {len(ids)} tokens, fewer than data.n_tokens={n_tokens}; add texts to data.texts")
    return ids[:n_tokens]
