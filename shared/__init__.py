"""StreamLab's stable core, reused by every experiment.

Importing ``shared`` is cheap: no torch, wandb or Triton at package import time. Modules:

- ``registry``  - discovers ``experiments/<name>/`` and their ``SPEC``
- ``config``    - Hydra composition (experiment ``conf/`` + ``shared/conf`` groups), clear errors
- ``runs``      - one run = one new directory: config, metrics.jsonl, results.csv, figures, provenance
- ``logger``    - ``MetricLogger``: metrics.jsonl, mirrored to wandb
- ``results``   - the tidy results table and its pivots
- ``runner``    - ``reproduce()``: what ``streamlab reproduce`` and the notebooks call
- ``plots``, ``progress``, ``runtime``, ``provenance``, ``io``, ``notebook``
"""
