"""Result pictures drawn with OpenCV (no matplotlib dependency): confusion matrices,
emotion-over-time charts and training curves. Each function returns a BGR image; :func:`save_png` writes it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ferkit.core.drawing import COLORS
from ferkit.errors import OutputError

FONT = cv2.FONT_HERSHEY_SIMPLEX


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an image, raising :class:`OutputError` with the path when it cannot be written."""
    p = Path(path)
    try:
        ok = cv2.imwrite(str(p), image)
    except cv2.error as e:
        raise OutputError(f"{p}: cannot write image ({e})") from None
    if not ok:
        raise OutputError(f"{p}: cannot write image (folder missing or not writable?)")
    return p


def confusion_matrix_image(cm: np.ndarray | list, labels: list[str] | tuple[str, ...], title: str = "",
                           normalize: bool = True) -> np.ndarray:
    """Confusion matrix as a picture: rows = true class, columns = predicted; cells show
    row-normalised recall (colour) and counts."""
    cm = np.asarray(cm, np.float64)
    n = len(labels)
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalize else cm / max(cm.max(), 1)
    cell, left, top = 78, 120, 90 if title else 60
    img = np.full((top + n * cell + 70, left + n * cell + 20, 3), 255, np.uint8)
    if title:
        cv2.putText(img, title, (10, 28), FONT, 0.65, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "predicted", (left + n * cell // 2 - 40, top - 35), FONT, 0.5, (60, 60, 60), 1, cv2.LINE_AA)
    for i in range(n):
        for j in range(n):
            v = float(frac[i, j])
            # white → dark blue
            color = tuple(int(255 - v * c) for c in (90, 200, 230))
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), color, -1)
            cv2.rectangle(img, (x0, y0), (x0 + cell, y0 + cell), (200, 200, 200), 1)
            txt_col = (255, 255, 255) if v > 0.55 else (0, 0, 0)
            cv2.putText(img, f"{v:.2f}", (x0 + 14, y0 + 35), FONT, 0.55, txt_col, 1, cv2.LINE_AA)
            cv2.putText(img, f"{int(cm[i, j])}", (x0 + 14, y0 + 58), FONT, 0.4, txt_col, 1, cv2.LINE_AA)
        cv2.putText(img, str(labels[i]), (6, top + i * cell + cell // 2 + 5), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, str(labels[i])[:8], (left + i * cell + 6, top - 10), FONT, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(img, "rows: true class; colour and top number: share of the row; bottom: count",
                (10, top + n * cell + 30), FONT, 0.42, (60, 60, 60), 1, cv2.LINE_AA)
    return img


#: Line colours (BGR) of series that :data:`~ferkit.core.drawing.COLORS` does not name, in order.
PALETTE = ((200, 90, 20), (30, 140, 250), (60, 170, 60), (40, 40, 210), (160, 80, 160), (40, 150, 150),
           (90, 90, 90))


def timeline_image(times: np.ndarray, series: dict[str, np.ndarray], title: str = "",
                   size: tuple[int, int] = (900, 360), y_label: str = "probability",
                   x_format: str = "{:.1f}s", y_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Line chart of several series over time (e.g. seven emotion probabilities of one track).

    Values are drawn within ``y_range`` (clipped to it); NaN marks a gap (e.g. frames where the face was
    unreadable). ``x_format`` writes the x-axis labels (``"{:.0f}"`` for epochs). The legend's width
    follows its longest name.
    """
    w, h = size
    legend = max((cv2.getTextSize(n, FONT, 0.45, 1)[0][0] for n in series), default=0)
    left, right, top, bottom = 60, max(120, legend + 45), 40 if title else 15, 40
    img = np.full((h, w, 3), 255, np.uint8)
    pw, ph = w - left - right, h - top - bottom
    t = np.asarray(times, np.float64)
    t0, t1 = (float(t.min()), float(t.max())) if len(t) else (0.0, 1.0)
    if t1 <= t0:
        t1 = t0 + 1.0
    y0, y1 = y_range
    if title:
        cv2.putText(img, title, (10, 26), FONT, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for k in range(5):  # horizontal grid at a quarter steps of the range
        y = top + ph - int(ph * k / 4)
        cv2.line(img, (left, y), (left + pw, y), (225, 225, 225), 1)
        cv2.putText(img, f"{y0 + (y1 - y0) * k / 4:.2f}", (8, y + 4), FONT, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    for k in range(6):
        x = left + int(pw * k / 5)
        cv2.putText(img, x_format.format(t0 + (t1 - t0) * k / 5), (x - 15, top + ph + 18), FONT, 0.4, (90, 90, 90),
                    1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (150, 150, 150), 1)
    cv2.putText(img, y_label, (left + pw - 80, max(12, top - 8)), FONT, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    for idx, (name, values) in enumerate(series.items()):
        v = np.asarray(values, np.float64)
        color = COLORS.get(name, PALETTE[idx % len(PALETTE)])
        xs = left + (t - t0) / (t1 - t0) * pw
        ys = top + ph - np.clip((v - y0) / (y1 - y0), 0, 1) * ph
        ok = np.isfinite(ys)
        # draw each contiguous run of finite values as one polyline
        start = None
        for i in range(len(v) + 1):
            if i < len(v) and ok[i]:
                start = i if start is None else start
            elif start is not None:
                pts = np.stack([xs[start:i], ys[start:i]], 1).round().astype(np.int32)
                if len(pts) == 1:
                    cv2.circle(img, tuple(pts[0]), 2, color, -1, cv2.LINE_AA)
                else:
                    cv2.polylines(img, [pts], False, color, 2, cv2.LINE_AA)
                start = None
        ly = top + 12 + idx * 18
        cv2.line(img, (left + pw + 10, ly - 4), (left + pw + 30, ly - 4), color, 3)
        cv2.putText(img, name, (left + pw + 35, ly), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def bar_chart_image(groups: dict[str, dict[str, float]], title: str = "", unit: str = "",
                    targets: dict[str, float] | None = None, size: tuple[int, int] = (900, 380)) -> np.ndarray:
    """Grouped horizontal bars: ``{group: {label: value}}`` (e.g. frames/s per clip at each frame size),
    each value written at its bar's end, and per group an optional dashed ``targets[group]`` line (a bar
    to reach) across that group's rows. A title may have several lines (``\n``): a long machine description
    goes on its own line rather than off the picture."""
    rows = [(g, label, float(v)) for g, bars in groups.items() for label, v in bars.items()]
    targets = targets or {}
    w, h = size
    title_lines = title.splitlines() if title else []
    left, right, top, bottom = 150, 70, 18 + 22 * len(title_lines) if title_lines else 15, 10
    h += top - 40 if title_lines else 0  # the plot area keeps its height however many title lines there are
    img = np.full((h, w, 3), 255, np.uint8)
    for k, line in enumerate(title_lines):
        cv2.putText(img, line, (10, 26 + 22 * k), FONT, 0.6 if k == 0 else 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if not rows:
        return img
    pw, ph = w - left - right, h - top - bottom
    top_value = max([v for *_, v in rows] + list(targets.values())) * 1.05 or 1.0
    step = ph / len(rows)
    palette = [(180, 120, 40), (60, 160, 230), (90, 170, 90), (150, 90, 170)]
    shade = {g: palette[i % len(palette)] for i, g in enumerate(groups)}
    for i, (group, label, value) in enumerate(rows):
        y0, y1 = int(top + i * step + step * 0.15), int(top + (i + 1) * step - step * 0.15)
        x1 = left + int(pw * max(value, 0.0) / top_value)
        cv2.rectangle(img, (left, y0), (max(left + 1, x1), y1), shade[group], -1)
        name = f"{label} ({group})" if len(groups) > 1 else label
        cv2.putText(img, name[:22], (8, (y0 + y1) // 2 + 5), FONT, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{value:.1f}", (x1 + 6, (y0 + y1) // 2 + 5), FONT, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
    first = 0
    for group, bars in groups.items():
        if group in targets:
            x = left + int(pw * targets[group] / top_value)
            ya, yb = int(top + first * step), int(top + (first + len(bars)) * step)
            for y in range(ya, yb, 12):
                cv2.line(img, (x, y), (x, min(y + 6, yb)), (40, 40, 200), 2)
            cv2.putText(img, f"{targets[group]:g} {unit}".strip(), (x + 4, ya + 12), FONT, 0.4, (40, 40, 200), 1,
                        cv2.LINE_AA)
        first += len(bars)
    cv2.line(img, (left, top), (left, top + ph), (120, 120, 120), 1)
    return img
