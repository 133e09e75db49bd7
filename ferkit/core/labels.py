"""The seven FER2013 emotions and the ways FER2013 sources spell them."""

from __future__ import annotations

#: Canonical order of every probability vector ferkit produces.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

#: Original ``fer2013.csv`` ids: 0=Angry 1=Disgust 2=Fear 3=Happy 4=Sad 5=Surprise 6=Neutral.
CSV_IDS: dict[int, str] = {0: "angry", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral"}

#: File-name prefixes of the tutorial's flat folder (``HA1234.jpg``).
PREFIXES: dict[str, str] = {
    "AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral", "SA": "sad", "SU": "surprise",
}

#: Folder-name spellings accepted besides the canonical names.
ALIASES: dict[str, str] = {"anger": "angry", "disgusted": "disgust", "fearful": "fear", "happiness": "happy",
                           "sadness": "sad", "surprised": "surprise", "calm": "neutral"}


def canonical(name: str) -> str | None:
    """Canonical emotion for a folder name or alias, or None if unknown."""
    key = name.strip().lower()
    if key in EMOTIONS:
        return key
    return ALIASES.get(key)


#: Emotion labels per language, in :data:`EMOTIONS` order (``--lang``; English is the canonical key).
TRANSLATIONS: dict[str, tuple[str, ...]] = {
    "en": EMOTIONS,
    "zh": ("生气", "厌恶", "恐惧", "高兴", "中性", "悲伤", "惊讶"),
}
LANGUAGES: tuple[str, ...] = tuple(TRANSLATIONS)
#: Why a face is unreadable, as pictures say it, per language (the JSON keeps the English ``reason`` key).
REASONS: dict[str, dict[str, str]] = {
    "en": {"unreadable": "unreadable", "too_small": "too small", "blurry": "blurry", "turned_away": "turned away",
           "low_score": "unsure"},
    "zh": {"unreadable": "无法识别", "too_small": "太小", "blurry": "模糊", "turned_away": "侧脸",
           "low_score": "不确定"},
}


def label(emotion: str, lang: str = "en") -> str:
    """The name of canonical ``emotion`` in ``lang`` (a key of :data:`TRANSLATIONS`)."""
    return TRANSLATIONS[lang][EMOTIONS.index(emotion)]
