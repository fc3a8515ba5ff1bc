"""Bringing your own weights: files, folders, file:// URLs, and a full report when they do not
fit the architecture."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from conftest import TINY, leftovers
from headstart import WeightsError, WeightsMismatchError, create_backbone
from headstart.backbones import cache_dir, weights as W
from headstart.backbones.efficientnet_lite import weights_file


def shifted_tiny_state(delta: float = 1.0) -> dict[str, torch.Tensor]:
    """tiny_cnn's state with every float tensor moved, so a load is visible."""
    return {k: (v + delta if v.is_floating_point() else v).contiguous()
            for k, v in create_backbone("tiny_cnn").state_dict().items()}


def assert_loaded(backbone, state):
    own = backbone.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in state)


@pytest.fixture
def misfit(tmp_path):
    """A tiny_cnn checkpoint with one tensor mis-shaped, one missing and one unexpected."""
    state = shifted_tiny_state()
    state["block1.0.weight"] = torch.zeros(16, 4, 3, 3)
    del state["stem.1.bias"]
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "misfit.pt"
    torch.save(state, path)
    return path


def test_mismatch_report(misfit):
    with pytest.raises(WeightsMismatchError) as e:
        create_backbone("tiny_cnn", weights=str(misfit))
    err = e.value
    assert err.missing == ["stem.1.bias"] and err.unexpected == ["extra.weight"]
    assert err.mismatched == [("block1.0.weight", (16, 4, 3, 3), (16, 8, 3, 3))]
    msg = str(err)
    assert str(misfit) in msg and "'tiny_cnn'" in msg
    assert "1 missing (stem.1.bias)" in msg and "1 unexpected (extra.weight)" in msg
    assert "block1.0.weight: checkpoint (16, 4, 3, 3) vs model (16, 8, 3, 3)" in msg
    assert isinstance(err, WeightsError) and isinstance(err, ValueError)


def test_mismatch_cli_one_line(cli, misfit, make_folder, tmp_path):
    runs = tmp_path / "runs"
    r = cli("train", make_folder(), "--out", runs / "x", "--strategy", "fine_tune", "--epochs",
            "1", *TINY, "--weights", misfit)
    line = r.one_line_error()
    assert str(misfit) in line
    assert "missing" in line and "unexpected" in line and "mis-shaped" in line
    assert "block1.0.weight" in line and "--backbone" in line
    assert leftovers(runs) == []


def test_efficientnet_weights_into_tiny_cnn():
    with pytest.raises(WeightsMismatchError) as e:
        create_backbone("tiny_cnn", weights=weights_file("efficientnet_lite0"))
    err = e.value
    assert "stem.0.weight" in err.missing and "_conv_stem.weight" in err.unexpected
    assert len(err.unexpected) > 100
    assert "more" in str(err) and len(str(err)) < 1500  # a report, not a dump


def test_tiny_weights_into_efficientnet(tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file(shifted_tiny_state(), str(path))
    with pytest.raises(WeightsMismatchError, match="efficientnet_lite0"):
        create_backbone("efficientnet_lite0", image_size=32, weights=str(path))


def test_local_directory_with_model_safetensors(tmp_path):
    state = shifted_tiny_state()
    (tmp_path / "mine").mkdir()
    save_file(state, str(tmp_path / "mine" / "model.safetensors"))
    backbone = create_backbone("tiny_cnn", weights=str(tmp_path / "mine"))
    assert_loaded(backbone, state)
    assert backbone.source_classifier_loaded is True


def test_torch_state_dict_with_wrappers(tmp_path):
    """DataParallel's 'module.' prefix and a {'state_dict': ...} wrapper are unwrapped."""
    state = shifted_tiny_state(2.0)
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3},
               tmp_path / "ckpt.pth")
    assert_loaded(create_backbone("tiny_cnn", weights=str(tmp_path / "ckpt.pth")), state)


def test_checkpoint_without_source_classifier(tmp_path):
    state = {k: v for k, v in shifted_tiny_state().items() if not k.startswith("fc.")}
    save_file(state, str(tmp_path / "body.safetensors"))
    backbone = create_backbone("tiny_cnn", weights=str(tmp_path / "body.safetensors"))
    assert_loaded(backbone, state)
    assert backbone.source_classifier_loaded is False


def test_a_run_directory_as_weights(tiny_runs):
    """A headstart run's model (backbone + head) gives its backbone to a new model."""
    from safetensors.torch import load_file
    run = tiny_runs["scratch"]
    saved = load_file(str(run / "model.safetensors"))
    backbone = create_backbone("tiny_cnn", weights=str(run))
    own = backbone.state_dict()
    assert torch.equal(own["stem.0.weight"], saved["backbone.stem.0.weight"])
    assert not torch.equal(own["stem.0.weight"], create_backbone("tiny_cnn").stem[0].weight)


def test_file_url_downloads_once_into_cache(tmp_path):
    state = shifted_tiny_state(3.0)
    src = tmp_path / "published" / "model.safetensors"
    src.parent.mkdir()
    save_file(state, str(src))
    url = src.as_uri()
    assert url.startswith("file://")
    local = W.resolve(url)
    assert local.is_file() and local != src
    assert cache_dir() in local.parents and local.name == "model.safetensors"
    assert local.read_bytes() == src.read_bytes()
    assert W.resolve(url) == local  # cached: not downloaded again
    assert_loaded(create_backbone("tiny_cnn", weights=url), state)


def test_failed_download(tmp_path):
    url = (tmp_path / "nothing.safetensors").as_uri()
    with pytest.raises(WeightsError) as e:
        W.download(url)
    assert url in str(e.value) and "download failed" in str(e.value)
    assert "local path" in str(e.value)


def test_nonexistent_path(tmp_path, cli, make_folder):
    with pytest.raises(WeightsError, match="no such weights file"):
        W.resolve(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError):
        create_backbone("tiny_cnn", weights=str(tmp_path / "nope.safetensors"))
    line = cli("train", make_folder(), "--out", tmp_path / "runs" / "x", "--strategy",
               "linear_probe", *TINY, "--weights", tmp_path / "nope.pt").one_line_error()
    assert str(tmp_path / "nope.pt") in line and "--weights" in line
    assert leftovers(tmp_path / "runs") == []


def test_directory_without_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no weights file found"):
        W.resolve(tmp_path / "empty")


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not really safetensors")
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        create_backbone("tiny_cnn", weights=str(bad))
    notdict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], notdict)
    with pytest.raises(WeightsError, match="no state_dict"):
        create_backbone("tiny_cnn", weights=str(notdict))
