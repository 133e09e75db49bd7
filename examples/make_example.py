"""Builds examples/astronauts.jpg from scikit-image's public-domain NASA portrait
(`skimage.data.astronaut()`, Eileen Collins, NASA): several copies at different
sizes, mirrored, in grey, one blurred and one tiny, so the example shows both
labelled and unreadable faces. Run: python examples/make_example.py"""

from pathlib import Path

import cv2
import numpy as np
from skimage import data


def main() -> None:
    src = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    canvas = np.full((720, 1280, 3), (90, 70, 50), np.uint8)
    canvas[:] = np.linspace(40, 120, 1280, dtype=np.uint8)[None, :, None]

    def paste(img: np.ndarray, x: int, y: int, side: int) -> None:
        canvas[y:y + side, x:x + side] = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)

    paste(src, 20, 100, 520)  # large, colour
    paste(cv2.flip(src, 1), 560, 40, 360)  # mirrored
    grey = cv2.cvtColor(cv2.cvtColor(src, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    paste(grey, 940, 40, 300)  # grey
    paste(cv2.GaussianBlur(src, (0, 0), 5.7), 600, 430, 270)  # found, but too blurry to read
    paste(src, 960, 420, 96)  # small but readable
    paste(cv2.flip(src, 1), 1120, 560, 60)  # face ~12 px: too small
    out = Path(__file__).with_name("astronauts.jpg")
    cv2.imwrite(str(out), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
