"""The shared figures of generated videos: every row of a long table is told apart."""

import numpy as np

from shared.procedural.figures import figure_drift, figure_strip


def test_drift_figure_draws_every_row_in_its_own_style_and_the_data_dashed():
    rng = np.random.default_rng(0)
    results = {f"row{i}": {"per_frame_validity": rng.uniform(0, 1, (3, 32)), "strip": rng.uniform(-1, 1, (8, 3, 4, 4))} for i in range(15)}
    data = {"per_frame_validity": np.ones((3, 32)), "strip": np.zeros((8, 3, 4, 4))}
    fig = figure_drift(results, data, 8)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == [*results, "data"]
    colours = {tuple(np.round(np.asarray(line.get_color(), float), 4)) for line in lines[:-1]}
    assert len(colours) == 15  # 15 rows, 15 colours (the default cycle repeats after 10)
    assert lines[-1].get_linestyle() == "--"
    np.testing.assert_allclose(lines[0].get_ydata(), results["row0"]["per_frame_validity"].reshape(3, 4, 8).mean(2).mean(0))
    assert len(figure_strip(results, data, 4).axes) == 16 * 4
