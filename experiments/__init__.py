"""One folder per paper. Each is self-contained (``cp -r`` is the whole fork) and never imports another."""
