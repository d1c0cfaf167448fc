"""Progress bars for long loops (tqdm). ``STREAMLAB_PROGRESS=0`` turns them off."""

from __future__ import annotations

import os
from collections.abc import Iterable


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None, **kwargs):
    # tqdm.auto: a text bar in terminals and logs, a widget in Jupyter (ipywidgets is installed), so a
    # notebook's saved outputs hold one bar, not hundreds of text frames
    from tqdm.auto import tqdm

    disable = bool(kwargs.pop("disable", False))  # e.g. ranks other than 0
    disable = disable or os.environ.get("STREAMLAB_PROGRESS", "1") == "0"
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, mininterval=0.5, leave=False, **kwargs)
