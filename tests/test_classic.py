"""The classic arm of `compare`: logistic regression on small pixels or HOG for images, TF-IDF
for texts, every setting chosen by cross-validation on the training examples alone."""
from __future__ import annotations

import numpy as np
import pytest

from headstart.data.datasets import from_memory
from headstart.data.texts import TextDataset
from headstart.evaluation.classic import IMAGE_CS, fit_classic, hog


@pytest.fixture(scope="module")
def silhouettes():
    """Real animal-mnist: 12 training and 20 test images of each of 5 classes, in memory."""
    pytest.importorskip("animal_mnist", reason="pip install --no-deps animal-mnist==0.4")
    from headstart.data.shipped import ANIMAL_CLASSES, load_animal_mnist
    images, labels = load_animal_mnist()
    pick = [np.flatnonzero(labels == c)[:32] for c in range(5)]
    train = np.concatenate([p[:12] for p in pick])
    test = np.concatenate([p[12:] for p in pick])
    name = [ANIMAL_CLASSES[c] for c in labels]
    return (from_memory(list(images[train]), [name[i] for i in train]),
            from_memory(list(images[test]), [name[i] for i in test]))


def test_images_choose_their_setting_by_cross_validation(silhouettes):
    train, test = silhouettes
    m = fit_classic(train, seed=0)
    kinds = {(r["kind"], r["size"], r["grey"]) for r in m.measured}
    assert kinds == {("pixels", 8, True), ("pixels", 16, True), ("pixels", 28, True),
                     ("hog", 32, True)}  # grey silhouettes: no RGB; 28 px images: no 32 px
    assert len(m.measured) == 4 * len(IMAGE_CS) and m.folds == 5
    best = max(m.measured, key=lambda r: r["cv_accuracy"])
    assert (m.cv_accuracy, m.C) == (best["cv_accuracy"], best["C"])
    assert m.features == best["features"] and m.describe().startswith("logistic regression on")
    y = np.array([m.classes.index(v) for v in test.labels])
    acc = float((m.predict(test.sources) == y).mean())
    assert acc > 0.5  # chance is 0.2
    again = fit_classic(train, seed=0)
    assert np.array_equal(again.predict(test.sources), m.predict(test.sources))


def test_one_example_per_class_falls_back_to_a_stated_default(silhouettes):
    train, _ = silhouettes
    one = train.subset([train.labels.index(c) for c in train.classes])
    m = fit_classic(one)
    assert m.measured == [] and m.cv_accuracy is None and m.folds is None
    assert "nothing to cross-validate" in m.chosen_by and m.features == "grey pixels at 16x16"


def test_colour_images_try_rgb_and_grey():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (20, 20, 3), dtype=np.uint8) for _ in range(12)]
    for i, im in enumerate(imgs):
        im[..., i % 2] = 255  # class 0 red-ish, class 1 green-ish: colour tells them apart
    m = fit_classic(from_memory(imgs, ["r", "g"] * 6))
    assert {r["grey"] for r in m.measured} == {True, False}
    assert m.cv_accuracy == 1.0
    assert any(r["features"] == "RGB pixels at 8x8" for r in m.measured)


def test_hog_votes_for_the_gradient_orientation():
    vertical_edge = np.zeros((1, 16, 16), np.float32)
    vertical_edge[:, :, 8:] = 1.0  # gradient along x: orientation 0
    f = hog(vertical_edge).reshape(3, 3, 4, 9)  # 4x4 cells -> 3x3 blocks of 2x2 cells x 9 bins
    centre = f[1, 1].reshape(4, 9).sum(0)
    assert centre.argmax() in (0, 8) and centre[4] == pytest.approx(0.0, abs=1e-6)
    assert np.all(f >= 0) and np.all(f <= 1.0 + 1e-6)


def test_texts_use_tfidf_words_and_characters(articles):
    texts, labels = articles
    ds = TextDataset(list(texts), list(labels))
    tr = [i for i in range(len(ds)) if i % 6 < 4]
    te = [i for i in range(len(ds)) if i % 6 >= 4]
    m = fit_classic(ds.subset(tr), seed=0)
    assert m.modality == "text" and m.setting == {"word_ngrams": [1, 2], "char_ngrams": [2, 5]}
    assert [r["C"] for r in m.measured] == [1.0, 10.0, 100.0] and m.folds == 4
    y = np.array([m.classes.index(labels[i]) for i in te])
    assert float((m.predict([texts[i] for i in te]) == y).mean()) > 0.5  # chance 0.2
