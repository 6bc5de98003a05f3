"""Hugging Face model folders: read (single file, shards, pytorch_model.bin), carried files,
and decoded into a folder that transformers' from_pretrained loads."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import nncodec_unify as nu
from nncodec_unify.codec.checkpoint import CheckpointError, load_folder
from nncodec_unify.cli import EXIT_OK, main

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    return transformers.BertModel(config).eval()


@pytest.mark.parametrize("layout", ["single", "sharded", "torch-bin"])
def test_a_model_folder_round_trips_to_a_folder_from_pretrained_loads(tmp_path, bert, layout):
    source = tmp_path / "source"
    if layout == "torch-bin":
        bert.save_pretrained(source, safe_serialization=False)
    else:
        bert.save_pretrained(source, max_shard_size="40KB" if layout == "sharded" else "5GB")
    (source / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    (source / "1_Pooling").mkdir()
    (source / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    names = set(load_folder(source))
    assert names == set(bert.state_dict()) - {"embeddings.position_ids"} or names == set(bert.state_dict())
    stream, target = tmp_path / "m.nnu", tmp_path / "decoded"
    assert main(["encode", str(source), str(stream), "--json", "--qp", "-48"]) == EXIT_OK  # fine: outputs compared
    model = nu.decode_tensors(stream.read_bytes())
    assert {f.path for f in model.files} == {"config.json", "tokenizer_config.json", "1_Pooling/config.json"}
    assert (model.header.version_major, model.header.version_minor) == (4, 0)
    assert main(["decode", str(stream), str(target) + "/"]) == EXIT_OK
    assert (target / "1_Pooling" / "config.json").read_text() == '{"pooling_mode_mean_tokens": true}'
    loaded = transformers.BertModel.from_pretrained(target).eval()
    decoded = {t.name: t.array for t in model.tensors}
    for name, value in loaded.state_dict().items():
        if name in decoded:
            assert np.array_equal(value.numpy(), decoded[name]), name
    ids = torch.tensor([[1, 5, 7, 2]])
    with torch.no_grad():
        ours, theirs = loaded(ids).last_hidden_state, bert(ids).last_hidden_state
    assert torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0) > 0.999


def test_attachments_can_be_left_out_and_folders_without_weights_are_refused(tmp_path, bert):
    bert.save_pretrained(tmp_path / "m")
    assert main(["encode", str(tmp_path / "m"), str(tmp_path / "m.nnu"), "--no-attach"]) == EXIT_OK
    data = (tmp_path / "m.nnu").read_bytes()
    assert nu.decode_tensors(data).files == () and data[9] == 0
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no model weights"):
        load_folder(tmp_path / "empty")
    index = tmp_path / "m" / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "../elsewhere.safetensors"}}))
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "model-00001-of-00001.safetensors")
    with pytest.raises(CheckpointError, match="is not a file in"):
        load_folder(tmp_path / "m")


def _sharded(bert, folder):
    """``bert`` saved as several safetensors shards with their index."""
    bert.save_pretrained(folder, max_shard_size="20KB")
    index = folder / "model.safetensors.index.json"
    assert index.is_file()
    return index


def test_a_folder_is_read_from_the_files_from_pretrained_reads(tmp_path, bert):
    """model.safetensors comes before a shard index, as in transformers; every tensor of the
    listed shards is read, listed in weight_map or not; weight files that from_pretrained
    does not read are named in the notes, not silently passed over."""
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "m"
    index = _sharded(bert, folder)
    single = {name: value.detach().numpy() + 1 for name, value in bert.state_dict().items()}
    save_file(single, folder / "model.safetensors")
    (folder / "adapter_model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    assert main(["encode", "-q", str(folder), str(tmp_path / "a.nnu"), "--json"]) == EXIT_OK
    decoded = nu.decode((tmp_path / "a.nnu").read_bytes())
    loaded = transformers.BertModel.from_pretrained(folder).state_dict()
    name = "pooler.dense.bias"
    assert np.allclose(decoded[name], loaded[name].numpy(), atol=1e-3) and np.allclose(decoded[name], single[name],
                                                                                      atol=1e-3)
    notes = nu.codec.checkpoint.folder_attachments(folder)[1]
    assert any(n.startswith("adapter_model.safetensors: neither encoded nor attached") for n in notes)
    assert any(n.startswith("model-00001-of-") for n in notes)  # the shards, which the single file overrides

    (folder / "model.safetensors").unlink()
    weight_map = json.loads(index.read_text())
    shard = weight_map["weight_map"].pop("embeddings.LayerNorm.bias")
    index.write_text(json.dumps(weight_map))
    assert "embeddings.LayerNorm.bias" in load_folder(folder)  # in its shard, though the index forgot it
    assert sorted(load_folder(folder)) == sorted(bert.state_dict())
    extra = load_file(folder / shard)
    other = next(s for s in set(weight_map["weight_map"].values()) if s != shard)
    moved = dict(load_file(folder / other), **{"embeddings.LayerNorm.bias": extra["embeddings.LayerNorm.bias"]})
    save_file(moved, folder / other)
    with pytest.raises(CheckpointError, match="is in two shards"):
        load_folder(folder)


def test_decoding_into_a_non_empty_folder_needs_force(tmp_path, bert, capsys):
    bert.save_pretrained(tmp_path / "m")
    assert main(["encode", str(tmp_path / "m"), str(tmp_path / "m.nnu")]) == EXIT_OK
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "out")]) != EXIT_OK
    assert "not empty" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "out"), "-f"]) == EXIT_OK
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine" and (tmp_path / "out" / "config.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging left behind
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".nncodec-")]


def _folder_stream(tmp_path):
    """A stream of a folder with weights, config.json and tokenizer/vocab.txt attached."""
    from safetensors.numpy import save_file

    folder = tmp_path / "m"
    (folder / "tokenizer").mkdir(parents=True)
    save_file({"w": np.ones((8, 8), np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer" / "vocab.txt").write_text("a b c")
    nu.encode_file(folder, tmp_path / "m.nnu")
    return tmp_path / "m.nnu"


@pytest.mark.parametrize("in_the_way", ["file where a folder goes", "folder where a file goes"])
def test_a_decode_into_a_folder_that_could_not_be_completed_writes_nothing(tmp_path, in_the_way, capsys):
    stream = _folder_stream(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("old config")
    (out / "model.safetensors").write_text("old weights")
    if in_the_way == "file where a folder goes":
        (out / "tokenizer").write_text("a file")
        blamed = out / "tokenizer"
    else:
        (out / "tokenizer" / "vocab.txt").mkdir(parents=True)
        blamed = out / "tokenizer" / "vocab.txt"
    before = sorted((p.relative_to(out), p.is_file() and p.read_bytes()) for p in out.rglob("*"))
    assert main(["decode", str(stream), str(out), "-f"]) != EXIT_OK
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blamed) in err and "Traceback" not in err
    # nothing replaced: not the config, not the weights (before, both were, then the move stopped)
    assert sorted((p.relative_to(out), p.is_file() and p.read_bytes()) for p in out.rglob("*")) == before
    with pytest.raises(CheckpointError, match="decode into another folder"):
        nu.decode_to_file(stream, out, overwrite=True)


def test_an_existing_folder_is_filled_from_inside_it(tmp_path, monkeypatch):
    """A folder that exists is built inside itself, so a mount point, or a folder whose parent
    cannot be written, is filled too (the staging folder was made beside it: EXDEV, EACCES)."""
    import tempfile

    from nncodec_unify.codec import checkpoint

    stream = _folder_stream(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    made = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args, dir=None, **kwargs):
        made.append(Path(dir))
        if Path(dir) == tmp_path:  # the parent: as if it were read-only
            raise PermissionError(13, "Permission denied")
        return real_mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(checkpoint.tempfile, "mkdtemp", mkdtemp)
    nu.decode_to_file(stream, out)
    assert made == [out]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "config.json", "model.safetensors", "tokenizer", "tokenizer/vocab.txt"]
    with pytest.raises(PermissionError, match=r"cannot build the output folder there \(Permission denied\)"):
        nu.decode_to_file(stream, f"{tmp_path / 'new'}/")  # a new folder is made beside: its parent must be writable
    assert not (tmp_path / "new").exists()


def test_the_api_encodes_and_decodes_folders_too(tmp_path, bert):
    bert.save_pretrained(tmp_path / "m")
    result = nu.encode_file(tmp_path / "m", tmp_path / "m.nnu")
    assert result.data == (tmp_path / "m.nnu").read_bytes()
    model = nu.decode_file(tmp_path / "m.nnu", str(tmp_path / "out") + "/")
    assert (tmp_path / "out" / "config.json").read_bytes() == (tmp_path / "m" / "config.json").read_bytes()
    assert [f.path for f in model.files] == ["config.json"]


def test_large_models_are_decoded_into_shards_with_an_index(tmp_path, bert):
    bert.save_pretrained(tmp_path / "m")
    assert main(["encode", str(tmp_path / "m"), str(tmp_path / "m.nnu"), "--qp", "-48"]) == EXIT_OK
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "out") + "/", "--max-shard-size", "30KB"]) \
        == EXIT_OK
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((tmp_path / "out" / shard).is_file() for shard in shards)
    assert not (tmp_path / "out" / "model.safetensors").exists()
    loaded = transformers.BertModel.from_pretrained(tmp_path / "out")
    decoded = nu.decode(tmp_path.joinpath("m.nnu").read_bytes())
    for name, value in loaded.state_dict().items():
        if name in decoded:
            assert np.array_equal(value.numpy(), decoded[name]), name
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "x") + "/", "--max-shard-size", "lots"]) == 2


def test_rate_control_carries_a_folders_files_and_counts_them(tmp_path, bert, capsys):
    """--target-size on a model folder: the stream holds config.json too (the size counts it),
    decodes to a folder from_pretrained loads; the trials are not listed off a terminal."""
    bert.save_pretrained(tmp_path / "m")
    target = 60_000
    assert main(["encode", str(tmp_path / "m"), str(tmp_path / "m.nnu"), "--target-size", str(target)]) == EXIT_OK
    assert "rate control: qp" not in capsys.readouterr().err
    data = (tmp_path / "m.nnu").read_bytes()
    assert len(data) <= target and [f.path for f in nu.decode_tensors(data).files] == ["config.json"]
    assert main(["decode", "-q", str(tmp_path / "m.nnu"), str(tmp_path / "out") + "/"]) == EXIT_OK
    transformers.BertModel.from_pretrained(tmp_path / "out")


def test_torch_shards_get_the_checks_safetensors_shards_get_and_shards_may_sit_in_a_subfolder(tmp_path):
    """pytorch_model.bin shards: a tensor in two shards, or one the index places in a shard
    that lacks it, is refused (it was taken from the last shard / dropped); the error names
    both shards. A shard in a subfolder of the model folder is read, as transformers does."""
    folder = tmp_path / "bin"
    folder.mkdir()
    torch.save({"v": torch.ones(2), "w": torch.zeros(2)}, folder / "a.bin")
    torch.save({"w": torch.ones(2)}, folder / "b.bin")
    index = folder / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"weight_map": {"v": "a.bin", "w": "b.bin"}}))
    with pytest.raises(CheckpointError, match=r"tensor 'w' is in two shards \('a.bin' and 'b.bin'\)"):
        load_folder(folder)
    torch.save({"v": torch.ones(2)}, folder / "a.bin")
    index.write_text(json.dumps({"weight_map": {"v": "a.bin", "w": "./a.bin"}}))
    with pytest.raises(CheckpointError, match="names a shard that does not hold it"):
        load_folder(folder)

    from safetensors.numpy import save_file

    nested = tmp_path / "nested"
    (nested / "s").mkdir(parents=True)
    save_file({"v": np.ones(2, np.float32)}, nested / "s" / "a.safetensors")
    (nested / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"v": "s/a.safetensors"}}))
    assert list(load_folder(nested)) == ["v"]
    assert not [n for n in nu.codec.checkpoint.folder_attachments(nested)[1] if "s/a.safetensors" in n]


def test_a_size_target_the_attached_files_alone_exceed_says_so(tmp_path, bert, capsys):
    bert.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "tokenizer.json").write_text("x" * 50_000)
    assert main(["encode", str(tmp_path / "m"), str(tmp_path / "m.nnu"), "--target-size", "30000"]) == 5
    assert "--no-attach leaves them out" in capsys.readouterr().err


@pytest.mark.parametrize("options", [["--no-digests", "--no-dq"], ["--no-digests", "--no-rdo"], ["--no-digests"]])
def test_a_folder_without_digests_decodes_whatever_the_quantization(tmp_path, options):
    """Attached files raise a stream without digests to format 3.1, whose tensors have the
    3.x quant_params (a quant_flags byte): with scalar levels they were written in the 2.x
    layout, and the stream did not decode ("reserved quant_flags bits set")."""
    stream = _folder_stream(tmp_path)  # makes tmp_path/m
    assert main(["encode", "-q", str(tmp_path / "m"), str(tmp_path / "plain.nnu"), "-f", *options]) == EXIT_OK
    assert (tmp_path / "plain.nnu").read_bytes()[8:10] == bytes([3, 1])  # version 3.1
    assert main(["verify", "-q", str(tmp_path / "plain.nnu")]) == EXIT_OK
    decoded = nu.decode_to_file(tmp_path / "plain.nnu", f"{tmp_path / 'out'}/")
    assert decoded.attached_written == 2 and (tmp_path / "out" / "tokenizer" / "vocab.txt").read_text() == "a b c"
    assert stream.exists()


def test_the_summary_says_what_the_attached_files_take_of_the_size(tmp_path, capsys):
    _folder_stream(tmp_path)  # makes tmp_path/m (weights, config.json, tokenizer/vocab.txt)
    assert main(["encode", "-q", str(tmp_path / "m"), str(tmp_path / "again.nnu"), "--json"]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["attached_files"] == ["config.json", "tokenizer/vocab.txt"] and summary["attached_bytes"] == 7
    assert main(["encode", "-q", str(tmp_path / "m"), str(tmp_path / "text.nnu")]) == EXIT_OK
    line = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  attached")]
    assert line and line[0].split() == ["attached", "2", "files", "7", "bytes", "(the", "folder's", "config", "and",
                                        "tokenizer", "files;", "counted", "in", "the", "size", "and", "ratio", "above)"]


def test_a_staging_folder_a_killed_decode_left_does_not_make_the_folder_non_empty(tmp_path):
    stream = _folder_stream(tmp_path)
    (tmp_path / "out" / ".nncodec-abc123" / "tokenizer").mkdir(parents=True)  # as SIGKILL mid-decode leaves it
    nu.decode_to_file(stream, tmp_path / "out")
    assert (tmp_path / "out" / "config.json").read_text() == "{}"
    with pytest.raises(nu.OutputExistsError, match="folder exists and is not empty"):
        nu.decode_to_file(stream, tmp_path / "out")  # the decoded files do count
