import cv2
import numpy as np
import torch

from ferkit.core.preprocess import FER_TEMPLATE, crop_face, normalize, prepare_batch, similarity_transform


def test_normalize_is_shared_between_numpy_and_torch():
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_allclose(normalize(x.astype(np.float32)), normalize(torch.from_numpy(x).float()).numpy(),
                               rtol=1e-6)
    assert np.isclose(normalize(np.float32(127.5)), 0.0)


def test_prepare_batch_matches_training_normalisation():
    crops = [np.full((48, 48), 200, np.uint8), np.full((96, 96, 3), 10, np.uint8)]
    b = prepare_batch(crops)
    assert b.shape == (2, 1, 48, 48) and b.dtype == np.float32
    assert np.allclose(b[0], normalize(np.float32(200))) and np.allclose(b[1], normalize(np.float32(10)))


def test_similarity_transform_recovers_rotation_scale_shift():
    ang, s, t = np.deg2rad(20), 1.7, np.array([5.0, -3.0])
    r = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = FER_TEMPLATE.astype(np.float64)
    dst = src @ r.T + t
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)


def test_crop_face_derotates_using_landmarks():
    # draw a synthetic "face": bright eyes and mouth at template positions ×4, then rotate the image
    big = np.zeros((192, 192), np.uint8)
    for x, y in FER_TEMPLATE * 4:
        cv2.circle(big, (int(x), int(y)), 5, 255, -1)
    rot = cv2.getRotationMatrix2D((96, 96), 25, 1.0)
    img = cv2.warpAffine(big, rot, (192, 192))
    lm = (np.c_[FER_TEMPLATE * 4, np.ones(5)] @ rot.T).astype(np.float32)
    crop = crop_face(img, (0, 0, 192, 192), lm)
    assert crop.shape == (48, 48)
    for x, y in FER_TEMPLATE:  # every landmark lands back on its template spot
        assert crop[int(round(y)), int(round(x))] > 100


def test_crop_face_without_landmarks_uses_the_box_and_handles_borders():
    img = np.zeros((100, 100), np.uint8)
    img[40:60, 40:60] = 255
    crop = crop_face(img, (40, 40, 20, 20), None)
    assert crop[24, 24] == 255 and crop.shape == (48, 48)
    edge = crop_face(img, (-10, -10, 30, 30), None)  # partly outside: replicated border, no crash
    assert edge.shape == (48, 48)


def test_large_faces_are_area_downsampled_not_aliased():
    # a fine checkerboard averages to grey when shrunk properly
    board = (np.indices((960, 960)).sum(0) % 2 * 255).astype(np.uint8)
    crop = crop_face(board, (0, 0, 960, 960), None)
    assert abs(float(crop[8:40, 8:40].mean()) - 127.5) < 10 and crop[8:40, 8:40].std() < 20
