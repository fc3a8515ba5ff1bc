"""`make-dataset bbc-headlines`: the BBC articles' headlines on bbc-news's split, deduped."""
from __future__ import annotations

from collections import Counter

import pytest

from headstart.data.shipped import bbc_split, headline, load_bbc_news

TOPICS = ["business", "entertainment", "politics", "sports", "tech"]


def _read(root):
    return {p.stem: (p.parent.name, p.read_text(encoding="utf-8")) for p in root.rglob("*.txt")}


@pytest.fixture(scope="module")
def package():
    texts, labels, names = load_bbc_news()
    pool, test = bbc_split(texts, labels)
    return texts, labels, names, pool, test


def test_headlines_keep_the_article_split_without_repeats(cli, tmp_path, package):
    texts, labels, names, pool, test = package
    r = cli("make-dataset", "bbc-headlines", tmp_path / "h", "--per-class", 3, "--seed", 1)
    assert r.rc == 0, r
    train, held = _read(tmp_path / "h" / "train"), _read(tmp_path / "h" / "test")
    assert sorted(p.name for p in (tmp_path / "h" / "train").iterdir()) == TOPICS
    assert Counter(topic for topic, _ in train.values()) == {t: 3 for t in TOPICS}
    assert len(held) == 678 and str(len(held)) in r.out
    # each file is its article's headline: one line, the article's first, same topic
    by_name = {n: (y, t) for n, y, t in zip(names, labels, texts)}
    for name, (topic, text) in {**train, **held}.items():
        assert "\n" not in text and text == text.strip() and text
        assert by_name[name][0] == topic and by_name[name][1].lstrip().startswith(text)
    # the same split as bbc-news: test headlines come from its test, training ones from its pool
    assert set(held) <= {names[i] for i in test}
    assert set(train) <= {names[i] for i in pool}
    # no headline twice, and no test headline anywhere else in the package
    everywhere = Counter(headline(t) for t in texts)
    assert all(everywhere[text] == 1 for _, text in held.values())
    assert not {t for _, t in train.values()} & {t for _, t in held.values()}


def test_headlines_folder_is_reused_and_differs_from_articles(cli, tmp_path):
    root = tmp_path / "h"
    assert cli("make-dataset", "bbc-headlines", root, "--per-class", 2).rc == 0
    before = _read(root)
    assert cli("make-dataset", "bbc-headlines", root, "--per-class", 2).rc == 0
    assert _read(root) == before
    # a bbc-news folder is not mistaken for a headlines one
    line = cli("make-dataset", "bbc-news", root, "--per-class", 2).one_line_error()
    assert str(root) in line
