"""Labels in other languages (--lang zh): text, JSON and pictures; a clear warning when no font can draw them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ferkit import Recognizer
from ferkit.apps.cli import main
from ferkit.core import drawing
from ferkit.core.labels import EMOTIONS, LANGUAGES, TRANSLATIONS
from ferkit.core.results import Face, Quality
from ferkit.core.settings import Settings
from ferkit.core.writers import face_line
from ferkit.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronauts.jpg"


def _face(lang: str, emotion: str = "sad", readable: bool = True) -> Face:
    probs = np.full(len(EMOTIONS), 0.02)
    probs[EMOTIONS.index(emotion)] = 0.88
    quality = Quality(readable, None if readable else "blurry", 120.0, 80.0, 0.0, 0.99)
    return Face(box=(40.0, 60.0, 120.0, 120.0), score=0.99, landmarks=None, quality=quality,
                probabilities=probs if readable else None, lang=lang)


def test_every_language_names_all_seven_emotions_distinctly():
    assert LANGUAGES[0] == "en" and "zh" in LANGUAGES
    for lang, names in TRANSLATIONS.items():
        assert len(names) == len(EMOTIONS) == len(set(names)), lang
    with pytest.raises(ConfigError, match="unknown label language"):
        Settings(lang="xx")


def test_chinese_text_line_is_the_tutorials_sentence_and_json_keeps_the_english_key():
    face = _face("zh")
    assert face_line("a.jpg", 1, face) == "a.jpg 识别第1个人脸的表情是悲伤 0.88"
    assert face.to_dict()["emotion"] == "sad" and face.to_dict()["label"] == "悲伤"
    assert face_line("a.jpg", 2, _face("zh", readable=False)) == "a.jpg 第2个人脸无法识别（模糊）"
    assert face_line("a.jpg", 1, _face("en")) == "a.jpg face 1: sad 0.88"  # English unchanged


def test_recognizer_labels_faces_in_the_settings_language():
    result = Recognizer(lang="zh").analyze(str(EXAMPLE))
    readable = [f for f in result.faces if f.readable]
    assert readable and all(f.label == TRANSLATIONS["zh"][EMOTIONS.index(f.emotion)] for f in readable)
    assert all(f.to_dict()["label"] is None for f in result.faces if not f.readable)


def test_pictures_use_a_font_with_the_glyphs_and_fall_back_to_english_without_one(monkeypatch, tmp_path):
    from PIL import ImageFont

    canvas = np.full((300, 300, 3), 90, np.uint8)
    english = drawing.draw_analysis(canvas, [_face("en")])
    monkeypatch.setenv("FERKIT_FONT", str(tmp_path / "missing.ttc"))
    assert drawing.font_path("zh") is None
    assert np.array_equal(drawing.draw_analysis(canvas, [_face("zh")]), english)  # no font: English label
    font_file = tmp_path / "font.ttf"
    font_file.write_bytes(b"stand-in: the loader below is Pillow's own font")
    monkeypatch.setenv("FERKIT_FONT", str(font_file))
    monkeypatch.setattr(drawing, "_pil_font", lambda path, size: ImageFont.load_default(size))
    assert drawing.font_path("zh") == str(font_file) and drawing.font_path("en") is None
    chinese = drawing.draw_analysis(canvas, [_face("zh")])
    assert not np.array_equal(chinese, english)  # the label was drawn by Pillow with that font
    box_edge = (slice(60, 180), slice(40, 42))
    np.testing.assert_array_equal(chinese[box_edge], english[box_edge])  # the box itself is the same


def test_cli_warns_once_when_pictures_cannot_show_the_language(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FERKIT_FONT", str(tmp_path / "missing.ttc"))
    code = main(["analyze", str(EXAMPLE), "--lang", "zh", "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0 and "识别第1个人脸的表情是" in out
    assert err.count("no font with Chinese glyphs") == 1 and "FERKIT_FONT" in err
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    assert {f["label"] for f in record["faces"] if f["label"]} <= set(TRANSLATIONS["zh"])
    main(["analyze", str(EXAMPLE), "--lang", "zh", "--no-images", "-o", str(tmp_path / "out2")])
    assert "no font" not in capsys.readouterr().err  # no pictures, nothing to warn about
