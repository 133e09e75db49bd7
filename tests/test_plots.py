"""Result pictures: bars are as long as their values and the target lines sit where they belong."""

from __future__ import annotations

import numpy as np

from ferkit.core.plots import bar_chart_image


def _bar_end(img: np.ndarray, y: int, colour: tuple[int, int, int]) -> int:
    """Right-most column of ``colour`` on row ``y``."""
    xs = np.flatnonzero((img[y] == colour).all(1))
    return int(xs.max()) if xs.size else -1


def test_bars_are_proportional_to_their_values_and_targets_cover_their_group():
    img = bar_chart_image({"a": {"x": 40.0, "y": 80.0}, "b": {"z": 20.0}}, "title", "fps",
                          targets={"a": 60.0}, size=(600, 200))
    assert img.shape == (200, 600, 3)
    top, step = 40, (200 - 40 - 10) / 3
    rows = [int(top + (i + 0.5) * step) for i in range(3)]
    ends = [_bar_end(img, rows[0], (180, 120, 40)), _bar_end(img, rows[1], (180, 120, 40)),
            _bar_end(img, rows[2], (60, 160, 230))]
    left = 150
    assert abs((ends[1] - left) - 2 * (ends[0] - left)) <= 2 and abs((ends[0] - left) - 2 * (ends[2] - left)) <= 2
    red = (img[:, :, 2] == 200) & (img[:, :, 0] == 40)
    target_cols = np.flatnonzero(red[rows[0]] | red[rows[1]])
    x60 = left + int((600 - 150 - 70) * 60.0 / (80.0 * 1.05))
    assert target_cols.size and abs(int(np.median(target_cols)) - x60) <= 2
    assert not red[rows[2]].any()  # group b has no target


def test_an_empty_chart_is_a_blank_picture():
    img = bar_chart_image({}, size=(300, 100))
    assert img.shape == (100, 300, 3) and (img == 255).all()


def test_a_two_line_title_adds_a_line_of_height_and_keeps_the_plot_area():
    one = bar_chart_image({"a": {"x": 40.0}}, "title", size=(600, 200))
    two = bar_chart_image({"a": {"x": 40.0}}, "title\na long machine description", size=(600, 200))
    assert two.shape == (222, 600, 3)
    # the same bar, 22 px lower and as long
    assert _bar_end(one, 100, (180, 120, 40)) == _bar_end(two, 122, (180, 120, 40)) > 150
    assert (two[40:62, :600] != 255).any()  # the second line is drawn


def test_timeline_draws_values_within_its_y_range_and_makes_room_for_long_names():
    from ferkit.core.plots import PALETTE, timeline_image

    def line_rows(img: np.ndarray) -> np.ndarray:  # within the plot area, left of the legend's swatch
        return np.unique(np.where((img[:, 60:700] == PALETTE[0]).all(2))[0])

    size, top, bottom = (900, 360), 15, 40
    mid = top + (size[1] - top - bottom) / 2
    img = timeline_image(np.arange(2), {"run": np.array([0.6, 0.6])}, size=size, y_range=(0.4, 0.8))
    assert abs(line_rows(img).mean() - mid) <= 2  # 0.6 is halfway up a 0.4–0.8 chart
    low = timeline_image(np.arange(2), {"run": np.array([0.3, 0.3])}, size=size, y_range=(0.4, 0.8))
    assert abs(line_rows(low).mean() - (size[1] - bottom)) <= 2  # below the range: clipped to the bottom

    def line_end(name: str) -> int:
        img = timeline_image(np.arange(2), {name: np.array([0.5, 0.5])}, size=size)
        return int(np.where((img == PALETTE[0]).all(2))[1].max())

    assert line_end("a legend name far longer than the usual emotion names") < line_end("run") - 100
