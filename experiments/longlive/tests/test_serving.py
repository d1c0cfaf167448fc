"""StreamDiffusionV2's SLO-aware batching simulation: the event stepping keeps every constraint
(release clock, autoregressive order, one worker), each scheduler decides as documented, and the
SLO-aware one meets deadlines that static batching misses."""

import numpy as np
import pytest

from shared.errors import ConfigError

from ..serving import Latency, arrivals, main, measure_latency, simulate

LINEAR = Latency((1, 2, 4, 8), (0.02, 0.03, 0.05, 0.09))  # 10 ms + 10 ms per stream


def test_latency_interpolates_between_measured_sizes_and_scales_beyond():
    assert LINEAR(1) == 0.02 and LINEAR(3) == pytest.approx(0.04) and LINEAR(16) == pytest.approx(0.18)


def test_one_viewer_with_ample_capacity_gets_every_chunk_one_latency_after_its_release():
    out = simulate(LINEAR, "slo", [0.5], period=0.25, slo=0.1, seconds=3.0, max_wait=0.1)
    assert out["miss_rate"] == 0 and out["ttff_ms"] == pytest.approx(20.0) and out["jitter_ms"] == pytest.approx(0.0, abs=1e-9)
    assert out["chunks"] == 10  # releases at 0.5, 0.75, ..., 2.75


def test_the_slo_scheduler_takes_the_largest_batch_that_meets_the_earliest_deadline():
    # four viewers at t = 0, deadline 0.035: B = 2 (30 ms) fits, B = 3 (40 ms) does not
    out = simulate(LINEAR, "slo", [0.0, 0.0, 0.0, 0.0], period=10.0, slo=0.035, seconds=1.0, max_wait=0.1)
    # first batch: 2 chunks done at 0.03 (on time); the other 2, due at 0.035, cannot make it even alone,
    # so both run together (done 0.06) rather than one at 0.05 and one at 0.07
    assert [d for v in out["viewers"] for d in v.delivered] == pytest.approx([0.03, 0.03, 0.06, 0.06])
    assert out["miss_rate"] == pytest.approx(0.5)
    out = simulate(LINEAR, "slo", [0.0, 0.0, 0.0, 0.0], period=10.0, slo=0.045, seconds=1.0, max_wait=0.1)
    assert [d for v in out["viewers"] for d in v.delivered] == pytest.approx([0.04, 0.04, 0.04, 0.06])  # B = 3 fits 0.045 (B = 4 needs 0.05); then 1
    assert out["miss_rate"] == pytest.approx(0.25)
    # different deadlines (0.046, 0.052) at t = 0.02: a batch of both (done 0.05) would meet the later
    # one only, so the earliest goes alone (done 0.04, on time)
    out = simulate(LINEAR, "slo", [0.0, 0.001, 0.007], period=10.0, slo=0.045, seconds=1.0, max_wait=0.1)
    assert [d for v in out["viewers"] for d in v.delivered] == pytest.approx([0.02, 0.04, 0.06])


def test_static_batching_waits_for_a_full_batch_or_its_longest_wait():
    out = simulate(LINEAR, "static:4", [0.0, 0.0], period=10.0, slo=1.0, seconds=1.0, max_wait=0.1)
    assert out["ttff_ms"] == pytest.approx(1000 * (0.1 + LINEAR(2)))  # two ready chunks wait 100 ms, then run together
    out = simulate(LINEAR, "static:2", [0.0, 0.05], period=10.0, slo=1.0, seconds=1.0, max_wait=0.1)
    assert out["ttff_ms"] == pytest.approx(1000 * ((0.05 + LINEAR(2)) + LINEAR(2)) / 2)  # the batch fills at 0.05


def test_deliveries_keep_the_release_clock_and_the_streams_order():
    joins = arrivals(3, 6, 2.0)
    for scheduler in ("slo", "static:1", "static:4"):
        out = simulate(LINEAR, scheduler, joins, period=0.25, slo=0.3, seconds=4.0, max_wait=0.1)
        assert out["chunks"] == sum(len(v.delivered) for v in out["viewers"]) > 0
        for v in out["viewers"]:
            assert v.released == pytest.approx([v.join + k * 0.25 for k in range(len(v.released))])  # the release clock
            assert all(d >= r + LINEAR(1) - 1e-12 for r, d in zip(v.released, v.delivered))  # never before its release
            assert all(b > a for a, b in zip(v.delivered, v.delivered[1:]))  # chunk k after chunk k - 1
        ends = sorted({d for v in out["viewers"] for d in v.delivered})
        assert all(b - a >= LINEAR(1) - 1e-12 for a, b in zip(ends, ends[1:]))  # one worker: batches never overlap
    assert joins == sorted(joins) and joins == arrivals(3, 6, 2.0) and joins != arrivals(4, 6, 2.0)


def test_under_load_slo_aware_batching_meets_deadlines_that_static_batching_misses():
    """Eight viewers at 4 chunks/s each (32 chunks/s) against 50 chunks/s of one-at-a-time capacity
    at B = 1 minus overheads: the SLO-aware server batches and meets every deadline; static:1 falls
    behind, static:8 makes early viewers wait for a full batch."""
    slow = Latency((1, 2, 4, 8), (0.05, 0.05, 0.08, 0.10))  # the shape measured on the shipped student
    res = {s: [simulate(slow, s, arrivals(seed, 8, 10.0), 0.25, 0.4, 20.0, 0.2) for seed in range(4)] for s in ("slo", "static:1", "static:8")}
    assert all(r["miss_rate"] == 0 for r in res["slo"]) and min(r["miss_rate"] for r in res["static:1"]) > 0.3
    assert np.mean([r["ttff_ms"] for r in res["slo"]]) < np.mean([r["ttff_ms"] for r in res["static:8"]]) - 50
    with pytest.raises(ConfigError, match="slo or static:B"):
        simulate(slow, "fifo", [0.0], 0.25, 0.4, 1.0, 0.2)


def test_the_cost_table_is_measured_on_the_shipped_student_alternating_sizes_over_rounds(monkeypatch):
    from ..stream import Stream

    generated, generate = [], Stream.generate

    def recording(self, text, chunks, on_chunk=None):
        generated.append((len(text), chunks))
        return generate(self, text, chunks, on_chunk)

    monkeypatch.setattr(Stream, "generate", recording)
    latency, provenance = measure_latency(sizes=(1, 2), chunks=2, rounds=2)
    assert latency.sizes == (1, 2) and all(0 < s < 5 for s in latency.seconds) and provenance["chunk_frames"] == 2 and provenance["rounds"] == 2
    assert [b for b, _ in generated] == [1, 2, 1, 2]  # a slow spell of the machine hits every size
    assert len({c for _, c in generated}) == 1 and generated[0][1] > 2  # the warm-up horizon, then the 2 timed chunks


def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--viewers", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err
    (tmp_path / "r.json").write_text("{}")
    assert main(["--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and len(err.strip().splitlines()) == 1


def test_the_published_json_says_where_it_came_from(tmp_path):
    import json

    out = tmp_path / "s.json"
    assert main(["--seeds", "0", "1", "--seconds", "2", "--viewers", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["provenance"]["command"][3:] == ["serving", "--seeds", "0", "1", "--seconds", "2", "--viewers", "2", "--out", str(out)]
    assert {"commit", "dirty", "torch", "chunk_frames", "threads"} <= set(result["provenance"])
    assert set(result["paired"]) == {"slo - static:1", "slo - static:4", "slo - static:8"} and len(result["per_seed"]["slo"]["ttff_ms"]) == 2
