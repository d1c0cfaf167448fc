"""Table streamdiffusion_v2: each tool's JSON read into claims with the right baseline, sign, null and
verdict; the published files all read; bad input is one line and exit 2."""

import json

import pytest

from ..streamdiffusion_v2 import Claim, main, pipeline_claims, serving_claims, stream_batch_claims, table, v2v_claims


def claim(effect, se, better="lower", null=0.0, claimed=True):
    return Claim("r", "b", "m", better, effect, se, null, "f.json", "abc", claimed)


def test_the_verdict_needs_more_than_two_standard_errors_on_the_better_side_of_the_null():
    assert claim(-0.3, 0.1).verdict == "met" and claim(0.3, 0.1).verdict == "contradicted"
    assert claim(-0.2, 0.1).verdict == "not resolved" and claim(0.19, 0.1).verdict == "not resolved"
    assert claim(0.3, 0.1, better="higher").verdict == "met" and claim(-0.3, 0.1, better="higher").verdict == "contradicted"
    assert claim(0.7, 0.1, null=1.0).verdict == "met" and claim(0.9, 0.1, null=1.0).verdict == "not resolved"  # a ratio: null 1
    assert claim(1.3, 0.1, better="higher", null=1.0).verdict == "met" and claim(1.3, 0.1, null=1.0).verdict == "contradicted"
    assert claim(0.0, 0.0).verdict == "not resolved" and claim(-1.0, float("nan")).verdict == "not resolved"
    assert claim(-0.3, 0.1, claimed=False).verdict == "better" and claim(0.3, 0.1, claimed=False).verdict == "worse"
    assert claim(0.8597, 0.03, null=1.0).effect_text == "0.8597x" and claim(-79.47, 6.2).effect_text == "-79.47"


SERVING = {
    "per_seed": {"slo": {"ttff_ms": [60, 62], "miss_rate": [0, 0], "jitter_ms": [10, 11]},
                 "static:1": {"ttff_ms": [150, 160], "miss_rate": [0.7, 0.6], "jitter_ms": [36, 37]},
                 "static:4": {"ttff_ms": [140, 150], "miss_rate": [0, 0], "jitter_ms": [28, 29]},
                 "static:8": {"ttff_ms": [190, 185], "miss_rate": [0, 0], "jitter_ms": [3, 2]}},
    "paired": {"slo - static:1": {"ttff_ms": [-94, 4], "miss_rate": [-0.65, 0.05], "jitter_ms": [-26, 0.5]},
               "slo - static:4": {"ttff_ms": [-84, 1], "miss_rate": [0, 0], "jitter_ms": [-18, 0.5]},
               "slo - static:8": {"ttff_ms": [-126.5, 3.5], "miss_rate": [0, 0], "jitter_ms": [8, 0.5]}},
}


def test_slo_batching_is_compared_with_the_static_batch_best_on_each_metric():
    by_metric = {c.metric: c for c in serving_claims(SERVING)}
    assert by_metric["ttff_ms"].against == "static:4" and by_metric["ttff_ms"].effect == -84 and by_metric["ttff_ms"].verdict == "met"
    assert by_metric["jitter_ms"].against == "static:8" and by_metric["jitter_ms"].verdict == "contradicted"
    assert by_metric["miss_rate"].against in ("static:4", "static:8") and by_metric["miss_rate"].verdict == "not resolved"


def test_the_pipeline_reads_fps_and_latency_as_ratios_over_the_single_process():
    claims = pipeline_claims({"paired": {"2 / 1 ranks": {"fps": [1.3, 0.05], "chunk_ms_median": [3.0, 0.2]},
                                         "3 / 1 ranks": {"fps": [0.8, 0.05], "chunk_ms_median": [1.0, 0.2]}}})
    got = {(c.row, c.metric): (c.effect, c.null, c.verdict) for c in claims}
    assert got[("pipeline_2_ranks", "fps_ratio")] == (1.3, 1.0, "met") and got[("pipeline_3_ranks", "fps_ratio")][2] == "contradicted"
    assert got[("pipeline_2_ranks", "chunk_ms_median_ratio")][2] == "contradicted" and got[("pipeline_3_ranks", "chunk_ms_median_ratio")][2] == "not resolved"
    assert all(c.against == "1 rank" for c in claims)


def test_the_stream_batch_is_timed_against_levels_and_judged_for_quality_against_the_trained_sampler():
    setting = lambda levels: {"levels": levels, "ratios": {"stream_batch / levels": {"ms_per_frame": [0.86, 0.03], "latency_ms": [1.65, 0.05]}},  # noqa: E731
                              "paired": {"position_error": [-0.38, 0.08, 24], "edit": [-0.06, 0.02, 24], "seams": [-0.39, 0.03, 24]}}
    claims = stream_batch_claims({"settings": {"0.8/1": setting([0.8, 0.6]), "1/8": setting([1, 0.75, 0.5, 0.25])}})
    rows = {c.row for c in claims}
    assert rows == {"stream_batch_v2v_2_levels_1_viewer", "stream_batch_t2v_4_levels_8_viewers"}
    t2v = {c.metric for c in claims if c.row.startswith("stream_batch_t2v")}
    assert "position_error" not in t2v and {"edit", "seams", "ms_per_frame_ratio"} <= t2v  # text-to-video never sees the input
    speed = next(c for c in claims if c.metric == "ms_per_frame_ratio")
    assert speed.against == "levels" and speed.null == 1.0 and speed.claimed and speed.verdict == "met"
    latency = next(c for c in claims if c.metric == "latency_ratio")
    assert not latency.claimed and latency.verdict == "worse"
    edit = next(c for c in claims if c.metric == "edit")
    assert edit.against == "self_forcing" and edit.better == "higher" and edit.verdict == "worse"


def test_v2v_flips_the_sign_where_the_json_pairs_the_other_way():
    paired = {f"motion - {row} @ every speed": {"position_error": [0.1 * i, 0.01], "edit": [0.02 * i, 0.001], "seams": [-0.03 * i, 0.001]}
              for i, row in enumerate(("matched", "motion_rolling", "motion_adaptive"), start=1)}
    got = {(c.row, c.metric): (c.against, c.effect) for c in v2v_claims({"paired": paired})}
    assert got[("motion_aware_noise", "position_error")] == ("matched", pytest.approx(0.1))
    assert got[("sink_tokens", "seams")] == ("motion_rolling", pytest.approx(-0.06))
    assert got[("adaptive_sink", "position_error")] == ("sink tokens (motion)", pytest.approx(-0.3))  # adaptive - motion
    assert got[("adaptive_sink", "edit")][1] == pytest.approx(-0.06)


def test_the_tool_writes_the_csv_names_missing_files_and_refuses_bad_input(tmp_path, capsys):
    (tmp_path / "serving.json").write_text(json.dumps({**SERVING, "provenance": {"commit": "0123456789abcdef", "dirty": False}}))
    claims, missing = table(tmp_path)
    assert [c.commit for c in claims] == ["0123456"] * 3 and len(missing) == 3 and all("python -m experiments.longlive" in m for m in missing)
    out = tmp_path / "t.csv"
    assert main(["--results", str(tmp_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not in the table (no file): pipeline.json" in text and "3 claims from 1 tools: 1 met, 1 not resolved, 1 contradicted" in text
    lines = out.read_text().splitlines()
    assert lines[0].split(",")[-1] == "verdict" and len(lines) == 4 and lines[1].endswith(",met")
    assert main(["--results", str(tmp_path), "--out", str(out)]) == 2  # not overwritten
    assert main(["--results", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "exists" in err[0] and "no tool results" in err[1]


def test_every_published_tool_result_reads():
    from ..streamdiffusion_v2 import RESULTS

    claims, missing = table(RESULTS)
    assert not missing, missing
    assert {c.source for c in claims} == {"serving.json", "pipeline.json", "stream_batch.json", "v2v.json"}
    assert all(c.commit != "not recorded" and not c.commit.endswith("dirty") for c in claims)  # published from clean commits
    published = (RESULTS / "streamdiffusion_v2.csv").read_text().splitlines()  # the published table is the JSON's, not stale
    assert len(published) == len(claims) + 1
    for line, c in zip(published[1:], claims):
        fields = line.split(",")
        assert fields[:4] == [c.row, c.against, c.metric, c.better] and float(fields[4]) == pytest.approx(c.effect) and fields[-1] == c.verdict
