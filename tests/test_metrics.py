import numpy as np

from ferkit.core.classification import softmax
from ferkit.training.metrics import confusion_matrix, expected_calibration_error, fit_temperature, summarize

NAMES = ("a", "b", "c")


def test_summary_on_known_predictions():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    probs = np.eye(3)[pred]
    s = summarize(y, probs, NAMES)
    assert s["accuracy"] == 4 / 6
    assert s["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert s["per_class"]["b"]["precision"] == 2 / 3 and s["per_class"]["b"]["recall"] == 1.0
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) / (2 / 3 + 1), 2 * 1 * 0.5 / 1.5]
    assert np.isclose(s["macro_f1"], np.mean(f1))


def test_confusion_counts_everything():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    cm = confusion_matrix(y, p)
    assert cm.sum() == 500 and np.trace(cm) == (y == p).sum()


def test_ece_zero_for_perfect_calibration_and_large_for_overconfidence():
    y = np.array([0] * 50 + [1] * 50)
    sure_right = np.eye(2)[y].astype(float)
    assert expected_calibration_error(y, sure_right) < 1e-9
    sure_wrong = np.eye(2)[1 - y].astype(float)
    assert np.isclose(expected_calibration_error(y, sure_wrong), 1.0)


def test_temperature_fit_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 7))
    y = np.array([rng.choice(7, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 3.0  # the model's logits are 3x too sharp
    t = fit_temperature(overconfident, y)
    assert 2.6 < t < 3.4
    assert expected_calibration_error(y, softmax(overconfident, t)) < expected_calibration_error(
        y, softmax(overconfident))
