"""Every registered experiment: its smoke preset runs end to end and leaves complete, sane records."""

import json
import math

import pytest
from omegaconf import OmegaConf

from shared.registry import discover
from shared.results import read_csv
from shared.runner import reproduce
from shared.runs import RECORD_FILES

EXPERIMENTS = discover()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_smoke_run_end_to_end(name, tmp_path):
    run = reproduce(name, "smoke", outputs=tmp_path)
    for record in RECORD_FILES:
        assert (run.dir / record).is_file(), record
    meta = json.loads((run.dir / "run.json").read_text())
    assert meta["status"] == "completed" and meta["preset"] == "smoke"
    assert OmegaConf.load(run.dir / "config.yaml").preset_name == "smoke"
    provenance = json.loads((run.dir / "provenance.json").read_text())
    assert provenance["git"]["sha"] and "torch" in provenance["packages"]
    assert list((run.dir / "figures").glob("*.png")), "a run saves at least one figure"

    results = read_csv(run.dir / "results.csv")
    got = {(r["table"], r["row"], r["metric"]) for r in results}
    for table_name, table in EXPERIMENTS[name].spec.tables.items():
        for row in table.rows:
            for metric in table.metrics:
                assert (table_name, row, metric) in got, (table_name, row, metric)
    assert all(math.isfinite(r["value"]) for r in results)
    assert {r["preset"] for r in results} == {"smoke"} and {r["run"] for r in results} == {run.dir.name}
