"""Small helpers for the thin notebooks: preset switch, paper-vs-ours tables, publishing results.

A notebook calls experiment code, loads, plots and asserts; it never defines the method.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import RunError
from .io import atomic_copy, atomic_write_json


def smoke() -> bool:
    """True when the notebook should run its smoke preset (CI sets ``STREAMLAB_SMOKE=1``)."""
    return os.environ.get("STREAMLAB_SMOKE", "0") == "1"


def with_reference(ours, reference: Iterable[Mapping]):
    """Our tidy results beside reference numbers, one line per (row, metric): our value, then the
    reference's value, setting and source (``paper`` or ``theory``) where there is one.

    ``reference`` rows: ``{"row", "metric", "value", "setting", "source"}``; ``setting`` names the
    paper's setting (model, data, hardware). A reference row that we do not run (a theoretical
    optimum, say) gets its own line. Side by side rather than one line per source, so a metric the
    paper does not report is one empty cell, not a line of them.
    """
    import pandas as pd

    presets = sorted(set(ours["preset"]))
    mine = ours[["row", "metric", "value"]].rename(columns={"value": f"ours (StreamLab, {', '.join(presets)} preset)"})
    theirs = pd.DataFrame(list(reference), columns=["row", "metric", "value", "setting", "source"]).rename(
        columns={"value": "reference", "setting": "reference setting", "source": "reference source"})
    both = mine.merge(theirs, on=["row", "metric"], how="outer", sort=False)
    return both.set_index(["row", "metric"])


class Shown:
    """What a notebook shows: a run (made just now, or named), or the results published beside the
    notebook (``results/``, written by ``publish``). The same names reach both: ``file("arrays.npz")``,
    ``figure("strip")``, ``table()``, ``config()``."""

    def __init__(self, directory: str | os.PathLike, run=None):
        self.dir = Path(directory)
        self.run = run
        self.published = not (self.dir / "run.json").is_file()

    def file(self, name: str) -> Path:
        path = self.dir / name
        if not path.is_file():
            raise RunError(f"{path} is missing: {'publish a complete run again' if self.published else 'the run did not make it'}")
        return path

    def figure(self, name: str) -> Path:
        return self.file(f"{name}.png" if self.published else f"figures/{name}.png")

    def table(self):
        from . import results

        return results.load([self.file("results.csv")])

    def provenance(self) -> dict:
        if self.published:
            return json.loads(self.file("provenance.json").read_text())
        meta = json.loads(self.file("run.json").read_text())
        return {"experiment": meta["experiment"], "preset": meta["preset"], "overrides": meta["overrides"], "commit": meta["git"]["sha"],
                "dirty": meta["git"]["dirty"], "date": meta.get("finished") or meta.get("started"), "run": self.dir.name}

    def config(self):
        """The run's resolved config. Results published before configs were published with them
        get their preset's config as composed at this commit (said in one line)."""
        from omegaconf import OmegaConf

        if (self.dir / "config.yaml").is_file():
            return OmegaConf.load(self.dir / "config.yaml")
        from . import config, registry

        prov = self.provenance()
        print(f"(config of preset {prov['preset']} as composed at this commit: the published run predates published configs)")
        return config.compose(registry.get(prov["experiment"]), prov["preset"], prov.get("overrides", []))

    def describe(self) -> str:
        p = self.provenance()
        what = "published results" if self.published else f"run {p['run']}"
        return (f"{what}: preset {p['preset']}{' ' + ' '.join(p['overrides']) if p.get('overrides') else ''}, commit {str(p.get('commit'))[:10]}"
                f"{' (dirty)' if p.get('dirty') else ''}, {p.get('date')}")


def show(experiment: str, preset: str | None, overrides: Iterable[str] = (), results_dir: str | os.PathLike = "results",
         run_dir: str | os.PathLike | None = None) -> Shown:
    """What the notebook shows. ``preset=None`` (the default): the published results, in seconds;
    a preset name runs it now (``reproduce``); ``run_dir``: an existing run."""
    if run_dir is not None:
        shown = Shown(run_dir)
    elif preset is None:
        if not (Path(results_dir) / "results.csv").is_file():
            raise RunError(f"no results published in {results_dir}/ yet: set PRESET = 'cpu' in the parameters cell to make them")
        shown = Shown(results_dir)
    else:
        from .runner import reproduce

        run = reproduce(experiment, preset, list(overrides))
        shown = Shown(run.dir, run=run)
    print(shown.describe())
    return shown


def publish(run, destination: str | os.PathLike, extras: Iterable[str] = ()) -> Path:
    """Copy a finished run's results.csv, figures, provenance and ``extras`` (file names in the run
    directory, e.g. ``nll.npz``) next to the notebook.

    ``run`` is a ``Run`` or a run directory. Refuses smoke runs, so CI never overwrites committed
    results, and runs that did not complete.
    """
    if run is None:
        raise RunError("nothing to publish: the notebook shows published results; set PRESET to run a preset first")
    directory = Path(getattr(run, "dir", run))
    meta = json.loads((directory / "run.json").read_text())
    if meta["preset"] == "smoke":
        raise RunError("smoke runs are not published; set STREAMLAB_SMOKE=0 and run the notebook again")
    if meta.get("status") != "completed":
        raise RunError(f"run {directory} did not complete; nothing published")
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    atomic_copy(directory / "results.csv", destination / "results.csv")
    for figure in sorted((directory / "figures").glob("*.png")):
        atomic_copy(figure, destination / figure.name)
    for name in ("config.yaml", *extras):  # the resolved config travels with the numbers
        atomic_copy(directory / name, destination / name)
    prov = json.loads((directory / "provenance.json").read_text())
    with open(directory / "results.csv", newline="") as f:
        first = next(csv.DictReader(f), {})
    atomic_write_json(
        destination / "provenance.json",
        {
            "experiment": meta["experiment"],
            "preset": meta["preset"],
            "overrides": meta["overrides"],
            "commit": meta["git"]["sha"],
            "dirty": meta["git"]["dirty"],
            "date": meta.get("finished"),
            "device": first.get("device"),
            "hardware": prov["hardware"],
            "command": prov["command"],
            "duration_s": meta.get("duration_s"),
            "run": directory.name,
        },
    )
    return destination


def gpu_results(results_dir: str | os.PathLike):
    """The GPU figures published for this notebook (``results/gpu/``, written by ``python -m
    shared.gpu_publish`` from a GPU pass), with the paper's numbers beside them where it reports
    one, as a DataFrame; prints one line of provenance. Prints why and returns None when no GPU pass
    is published yet."""
    import pandas as pd

    folder = Path(results_dir) / "gpu"
    if not (folder / "figures.csv").is_file():
        print(f"No GPU pass published in {folder} yet: on a lent GPU run `bash env/gpu/pass.sh`, then "
              "`python -m shared.gpu_publish <returned folder>` (env/gpu/README.md).")
        return None
    prov = json.loads((folder / "provenance.json").read_text())
    tests = prov.get("tests", {})
    print(f"GPU pass of {prov.get('date')} on {prov.get('device')} (driver {prov.get('driver')}, torch {prov.get('torch')}, "
          f"Triton {prov.get('triton')}), commit {str(prov.get('commit'))[:10]}{' (dirty)' if prov.get('dirty') == 'true' else ''}; "
          f"GPU tests: {tests.get('passed', 0)} passed, {len(tests.get('failed', []))} failed, {tests.get('skipped', 0)} skipped")
    return pd.read_csv(folder / "figures.csv", keep_default_na=False, na_values=[""])


def clean_outputs(path: str | os.PathLike) -> bool:
    """Strip what a saved notebook should not carry: stderr streams (progress-bar frames, warnings),
    this machine's paths (the repository root becomes ``<repo>``) and embedded images (the figures
    are committed beside the notebook in ``results/`` and the notebook redraws them in seconds; as
    base64 they doubled their size and the repository travels to a lent GPU within 64 MiB, wheels
    included). Text outputs (tables, printed numbers) stay. True when it changed."""
    import nbformat

    from .paths import REPO_ROOT

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.get("name") == "stderr")]
        for output in cell.outputs:
            if output.output_type == "stream":
                output.text = output.text.replace(str(REPO_ROOT), "<repo>")
            for kind in [k for k in output.get("data", {}) if k.startswith("image/")]:
                del output.data[kind]
            for kind, value in output.get("data", {}).items():
                if isinstance(value, str) and not kind.startswith("image/"):
                    output.data[kind] = value.replace(str(REPO_ROOT), "<repo>")
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after + "\n", encoding="utf-8")
    return after != before


if __name__ == "__main__":  # python -m shared.notebook clean NOTEBOOK.ipynb ... (make notebooks-sync runs it)
    import sys

    if sys.argv[1:2] != ["clean"]:
        raise SystemExit("usage: python -m shared.notebook clean NOTEBOOK.ipynb ...")
    for name in sys.argv[2:]:
        if clean_outputs(name):
            print(f"cleaned {name}")
