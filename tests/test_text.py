"""Text transfer: loading and its errors, windows for long texts, every strategy on the tiny text
backbone, the CLI and the estimator on real BBC News articles, and a model directory as backbone.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_csv
from headstart import TransferClassifier, api
from headstart.backbones import create_backbone, get_config
from headstart.modalities import load_dataset
from headstart.data.shipped import bbc_split, load_bbc_news
from headstart.data.tokenize import TextPreprocess
from headstart.exceptions import DataError
from headstart.training import TrainConfig
from headstart.modalities.text import embed_texts

TINY = ["--backbone", "tiny_text", "--quiet"]


@pytest.fixture(scope="session")
def bbc():
    """(texts, labels) of real BBC articles: 6 per topic from the training pool, and 8 per
    topic from the 700-article hold-out."""
    texts, labels, _ = load_bbc_news()
    pool, test = bbc_split(texts, labels)

    def pick(idx, k):
        out = []
        for c in sorted(set(labels)):
            out += [i for i in idx if labels[i] == c][:k]
        return [texts[i] for i in out], [labels[i] for i in out]
    return pick(pool, 6), pick(test, 8)


def tiny_cfg(strategy="linear_probe", **kw) -> TrainConfig:
    return TrainConfig(backbone="tiny_text", strategy=strategy, epochs=kw.pop("epochs", 2), **kw)


# -- loading ----------------------------------------------------------------------------------
def test_table_formats_and_default_columns(tmp_path, bbc):
    (texts, labels), _ = bbc
    csv_ds = load_dataset(write_csv(tmp_path / "a.csv", texts, labels))
    tsv_ds = load_dataset(write_csv(tmp_path / "a.tsv", texts, labels, sep="\t"))
    jl = tmp_path / "a.jsonl"
    jl.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in zip(texts, labels)),
                  encoding="utf-8")
    for ds in (csv_ds, tsv_ds, load_dataset(jl)):
        assert ds.modality == "text" and ds.sources == texts and ds.labels == labels


def test_semicolon_csv_reads_as_excel_saves_it(tmp_path):
    """Excel in locales with a decimal comma saves CSV with semicolons (here with its BOM):
    read as such, commas inside the texts included; a comma CSV whose texts hold semicolons
    stays a comma CSV."""
    p = tmp_path / "excel.csv"
    p.write_bytes("\ufefftext;label\ngreat, really great;pos\n\"awful; a waste\";neg\n"
                  .encode("utf-8"))
    ds = load_dataset(p)
    assert ds.sources == ["great, really great", "awful; a waste"] and ds.labels == ["pos", "neg"]
    q = write_csv(tmp_path / "comma.csv", ["fine; good", "bad; dire"], ["pos", "neg"])
    assert load_dataset(q).sources == ["fine; good", "bad; dire"]


def test_named_columns_and_missing_column(tmp_path):
    p = write_csv(tmp_path / "r.csv", ["good film", "bad film"], ["pos", "neg"],
                  header="review_body,stars")
    with pytest.raises(DataError, match=r"no text column .*'review_body', 'stars'.*--text-column"):
        load_dataset(p)
    from headstart.data.texts import TextOptions
    ds = load_dataset(p, text_options=TextOptions("review_body", "stars"), modality="text")
    assert ds.sources == ["good film", "bad film"] and ds.labels == ["pos", "neg"]


def test_text_folder_and_lists(tmp_path):
    for c, words in (("pos", ["great", "lovely"]), ("neg", ["awful", "dire"])):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i, w in enumerate(words):
            (tmp_path / "d" / c / f"{i}.txt").write_text(f"a {w} day", encoding="utf-8")
    ds = load_dataset(tmp_path / "d")
    assert ds.modality == "text" and sorted(ds.labels) == ["neg", "neg", "pos", "pos"]
    mem = load_dataset(["a great day", "an awful day"], ["pos", "neg"])
    assert mem.modality == "text" and mem.describe_sources() == ["text 1", "text 2"]


def test_empty_text_is_named_or_skipped_and_listed(tmp_path):
    p = write_csv(tmp_path / "e.csv", ["fine", "   ", "ok", "good"], ["a", "a", "b", "b"])
    with pytest.raises(DataError, match=r"e\.csv, line 3: the text is empty or only whitespace"):
        load_dataset(p)
    ds = load_dataset(p, skip_bad=True)
    assert len(ds) == 3 and ds.skipped == [f"{p}, line 3: empty or whitespace-only text"]


def test_not_utf8_names_file_and_line_and_decodes_with_stated_encoding(tmp_path):
    p = tmp_path / "w.csv"
    p.write_bytes("text,label\ncheap,a\ncosts \u00a35,b\nfree,a\nmore,b\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"w\.csv, line 3: not valid utf-8 \(byte 0xa3.*--encoding"):
        load_dataset(p)
    from headstart.data.texts import TextOptions
    ds = load_dataset(p, text_options=TextOptions(encoding="cp1252"))
    assert ds.sources[1] == "costs \u00a35"


def test_bad_jsonl_line_and_single_example_label(tmp_path, bbc):
    p = tmp_path / "b.jsonl"
    p.write_text('{"text": "x", "label": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"b\.jsonl, line 2: not valid JSON"):
        load_dataset(p)
    with pytest.raises(DataError, match=r"'b' have a single example"):
        api.train(["one", "two", "three"], labels=["a", "a", "b"], config=tiny_cfg(),
                  progress=False, log=lambda *_: None)


def test_unknown_label_at_evaluation(tmp_path, bbc):
    (texts, labels), _ = bbc
    trained = api.train(texts, labels=labels, config=tiny_cfg(), progress=False,
                        log=lambda *_: None)
    with pytest.raises(DataError, match="classes weather are not among the run's classes"):
        api.evaluate(trained, ["rain all day", "sun"], labels=["weather", "sports"])


def test_image_backbone_on_texts_is_refused(bbc):
    (texts, labels), _ = bbc
    with pytest.raises(Exception, match="reads images but the data holds texts.*minilm_l6"):
        api.train(texts, labels=labels, config=TrainConfig(backbone="tiny_cnn"), progress=False,
                  log=lambda *_: None)


# -- windows ----------------------------------------------------------------------------------
def test_long_texts_are_windowed_and_pooled_not_truncated(bbc):
    (texts, _), _ = bbc
    cfg = get_config("tiny_text")
    pre = TextPreprocess(cfg.tokenizer, 32)
    ids = pre.tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    windows = pre.windows([texts[0]])[0]
    assert len(windows) == -(-len(ids) // 30) > 1
    assert [t for w in windows for t in w[1:-1]] == ids  # every token, once, in order
    assert len(TextPreprocess(cfg.tokenizer, 32, truncate=True).windows([texts[0]])[0]) == 1
    # the document embedding is the token-weighted mean of its windows, normalised
    backbone = create_backbone("tiny_text", image_size=32).eval()
    doc = embed_texts(backbone, pre, [texts[0]])[0]
    backbone.normalize = False
    with torch.no_grad():
        per_window = backbone(pre.collate([[w] for w in windows])).numpy()
    weights = np.array([len(w) for w in windows], float)
    manual = (per_window * weights[:, None]).sum(0) / weights.sum()
    np.testing.assert_allclose(doc, manual / np.linalg.norm(manual), rtol=1e-4, atol=1e-5)


def test_window_handling_is_said_aloud(bbc):
    (texts, labels), _ = bbc
    lines: list[str] = []
    api.train(texts, labels=labels, config=tiny_cfg(truncate=True), progress=False,
              log=lines.append)
    assert any(f"of {len(texts)} texts are longer than 64 tokens and keep only their first"
               in s for s in lines)


# -- strategies -------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["linear_probe", "fine_tune", "gradual", "scratch"])
def test_each_strategy_trains_and_predicts(strategy, bbc):
    (texts, labels), (test_texts, test_labels) = bbc
    torch.manual_seed(0)
    init = create_backbone("tiny_text").state_dict()
    # no validation split: the last epoch's weights are kept, so the test sees what trained
    trained = api.train(texts, labels=labels, config=tiny_cfg(strategy, unfreeze="2", epochs=2,
                                                              val_fraction=0.0),
                        progress=False, log=lambda *_: None)
    assert [r["phase"] for r in trained.history][0] == ("scratch" if strategy == "scratch"
                                                         else "head")
    state = trained.model.backbone.state_dict()
    moved = {k: not torch.equal(state[k], init[k]) for k in init}
    emb = [k for k in init if "embeddings" in k]
    top = [k for k in init if ".layer.1." in k and "weight" in k]
    if strategy == "linear_probe":
        assert not any(moved.values())
    elif strategy == "fine_tune":  # unfreeze 2 = pooling + layer2: embeddings stay frozen
        assert not any(moved[k] for k in emb) and all(moved[k] for k in top)
    elif strategy == "scratch":
        assert all(moved[k] for k in emb)
    report, _ = api.evaluate(trained, test_texts, labels=test_labels, progress=False)
    assert report["n"] == len(test_texts)


def test_pair_training_leaves_the_token_table_and_tunes_the_rest(bbc):
    """Under the pair objective the token-embedding table stays as pre-trained (it is no
    parameter the optimizer steps), while the rest of the embeddings group and the layers
    move; the classification fine-tune still tunes the table."""
    (texts, labels), _ = bbc
    init = create_backbone("tiny_text").state_dict()
    table = "encoder.embeddings.word_embeddings.weight"
    assert table in init
    for strategy in ("contrastive", "fine_tune"):
        torch.manual_seed(0)
        trained = api.train(texts, labels=labels, config=tiny_cfg(strategy, epochs=2,
                                                                  val_fraction=0.0),
                            progress=False, log=lambda *_: None)
        state = trained.model.backbone.state_dict()
        moved = {k for k in init if not torch.equal(state[k], init[k])}
        assert "encoder.embeddings.LayerNorm.weight" in moved
        assert any(".layer.1." in k for k in moved)
        assert (table in moved) == (strategy == "fine_tune"), strategy


def test_fine_tune_uses_small_transformer_rates(bbc):
    from headstart.strategies import build_plan
    plan = build_plan("fine_tune", get_config("minilm_l6").layer_groups, modality="text")
    assert max(plan.phases[1].group_lrs) == pytest.approx(1e-4)
    assert plan.phases[1].train_groups[0] == "embeddings"


# -- CLI, estimator, cache, model directories -------------------------------------------------
def test_cli_train_predict_evaluate_on_csv(tmp_path, cli, bbc):
    (texts, labels), (test_texts, test_labels) = bbc
    data = write_csv(tmp_path / "train.csv", texts, labels)
    test = write_csv(tmp_path / "test.csv", test_texts, test_labels)
    r = cli("train", str(data), "--out", str(tmp_path / "run"), "--strategy", "linear_probe",
            *TINY)
    assert r.rc == 0, r.err
    (tmp_path / "one.txt").write_text(test_texts[0], encoding="utf-8")
    r = cli("predict", "--run", str(tmp_path / "run"), "--json", "--top", "2",
            "shares fell on the stock market", str(tmp_path / "one.txt"), str(test))
    rows = r.json()
    assert r.rc == 0 and len(rows) == 2 + len(test_texts)
    assert rows[1]["image"].endswith("one.txt") and len(rows[0]["top"]) == 2
    r = cli("evaluate", str(tmp_path / "run"), str(test), "--json")
    assert r.rc == 0 and r.json()["n"] == len(test_texts)
    r = cli("predict", "--run", str(tmp_path / "run"), "   ")
    assert r.rc == 2 and "empty or only whitespace" in r.one_line_error()
    # a folder stands for its .txt files, sorted; what else it holds is named on stderr
    (tmp_path / "inbox" / "old").mkdir(parents=True)
    for i, t in enumerate(test_texts[:2]):
        (tmp_path / "inbox" / f"{i}.txt").write_text(t, encoding="utf-8")
    (tmp_path / "inbox" / "old" / "2.txt").write_text(test_texts[2], encoding="utf-8")
    (tmp_path / "inbox" / "cover.png").write_bytes(b"not read")
    r = cli("predict", "--run", str(tmp_path / "run"), "--json", str(tmp_path / "inbox"))
    assert r.rc == 0, r.err
    assert [row["image"] for row in r.json()] == [str(tmp_path / "inbox" / n) for n in
                                                 ("0.txt", "1.txt", "old/2.txt")]
    cover = tmp_path / "inbox" / "cover.png"
    assert f"3 text file(s) to predict; not read: 1 other entry ({cover})" in r.err
    (tmp_path / "none").mkdir()
    assert "a folder holding no .txt files" in cli(
        "predict", "--run", str(tmp_path / "run"), str(tmp_path / "none")).one_line_error()


def test_estimator_on_texts_and_cache_reuse(bbc):
    (texts, labels), (test_texts, test_labels) = bbc
    clf = TransferClassifier(backbone="tiny_text", strategy="linear_probe", verbose=False)
    clf.fit(texts, labels)
    assert set(clf.predict(test_texts)) <= set(labels)
    from headstart.training import FeatureCache, FeatureExtractor
    from headstart.training.extract import extract_features
    trained = clf.trained_
    ds = load_dataset(texts, labels)
    ex = extract_features(ds, FeatureExtractor(trained.model.backbone), trained.preprocess,
                          cache=FeatureCache(), progress=False)
    assert ex.from_cache == len(texts)  # embedded during fit, read back now


def test_model_directory_as_backbone(tmp_path, bbc):
    (texts, labels), _ = bbc
    backbone = create_backbone("tiny_text")
    d = tmp_path / "my-encoder"
    backbone.encoder.save_pretrained(str(d))
    from headstart.data.tokenize import load_tokenizer
    load_tokenizer(get_config("tiny_text").tokenizer).save_pretrained(str(d))
    cfg = get_config(str(d))
    assert cfg.modality == "text" and cfg.layer_groups == ("embeddings", "layer1", "layer2",
                                                           "pooling")
    pre = TextPreprocess(cfg.tokenizer, 64)  # same weights, same windows: same embeddings
    np.testing.assert_allclose(embed_texts(create_backbone(str(d)), pre, texts[:3]),
                               embed_texts(backbone, pre, texts[:3]), atol=1e-5)
    trained = api.train(texts, labels=labels, config=TrainConfig(backbone=str(d),
                        strategy="linear_probe"), progress=False, log=lambda *_: None)
    assert trained.config.image_size == 256  # no sentence-transformers config: min(256, 512)
    assert Path(trained.config.backbone) == d.resolve()


@pytest.mark.integration
def test_minilm_linear_probe_on_real_bbc_articles(bbc):
    (texts, labels), (test_texts, test_labels) = bbc
    trained = api.train(texts, labels=labels, config=TrainConfig(strategy="linear_probe"),
                        progress=False, log=lambda *_: None)
    assert trained.config.backbone == "minilm_l6"
    report, _ = api.evaluate(trained, test_texts, labels=test_labels, progress=False)
    assert report["accuracy"] >= 0.8  # 6 labelled articles per topic; chance is 0.2


@pytest.mark.integration
def test_backbone_auto_ranks_and_records_the_choice(tmp_path, cli, bbc):
    (texts, labels), _ = bbc
    data = write_csv(tmp_path / "short.csv", [t.split("\n")[0] for t in texts], labels)
    r = cli("train", data, "--out", tmp_path / "run", "--backbone", "auto", "--quiet")
    assert r.rc == 0, r.err
    assert "recommendation: --backbone" in r.out
    import yaml
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    choice = stored["backbone_choice"]
    assert choice["backbone"] == stored["backbone"] and not choice["candidate"].startswith(
        "random") and choice["reason"]
