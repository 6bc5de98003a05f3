"""Tied weights (format 5.0, spec §5.2): one tensor under several names is coded once, its
other names carried as aliases, and decoded as one array (one torch tensor) under each name."""

import json

import numpy as np
import pytest
import torch

import nncodec_unify as nu
from nncodec_unify.cli import EXIT_OK, main
from nncodec_unify.codec.checkpoint import load_checkpoint
from nncodec_unify.codec.tensors import find_ties

torch.set_num_threads(1)


def _weights(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.02, (64, 32)).astype(np.float32)


class TiedModel(torch.nn.Module):
    """An embedding whose matrix the output layer reuses, as language models tie them."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.mid = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.mid(self.embed(ids))))


def test_a_tensor_under_two_names_is_coded_once_and_decoded_as_one_array():
    w, bias = _weights(), np.linspace(-1, 1, 7, dtype=np.float32)
    tied = nu.encode({"embed": w, "bias": bias, "head": w})
    untied = nu.encode({"embed": w, "bias": bias, "head": w.copy()})
    assert tied[8] == 5 and untied[8] == 4  # 5.0 only when a model has tied weights (§10)
    assert len(tied) < 0.6 * len(untied)
    model = nu.decode_tensors(tied)
    assert [(t.name, t.alias_of) for t in model.tensors] == [("embed", None), ("head", "embed"), ("bias", None)]
    decoded = nu.decode(tied)
    assert decoded["head"] is decoded["embed"]
    assert np.array_equal(decoded["embed"], nu.decode(untied)["embed"])
    # the model digest has a record per name: equal to a stream of the same tensors in the same order
    same_order = nu.encode({"embed": w, "head": w.copy(), "bias": bias})
    assert model.model_digest == nu.decode_tensors(same_order).model_digest


def test_tied_torch_weights_stay_tied_through_pt_files(tmp_path):
    torch.manual_seed(0)
    model = TiedModel()
    state = model.state_dict()
    assert find_ties(state) == {"head.weight": "embed.weight"}
    torch.save(state, tmp_path / "m.pt")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "-q"]) == EXIT_OK
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "back.pt"), "-q"]) == EXIT_OK
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert back["head.weight"] is back["embed.weight"]
    assert list(back) == ["embed.weight", "head.weight", "mid.weight", "mid.bias"]
    restored = TiedModel()
    restored.load_state_dict(back)
    ids = torch.arange(10)
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(restored(ids).flatten(), model(ids).flatten(), dim=0) > 0.999
    pt = nu.decode((tmp_path / "m.nnu").read_bytes(), framework="pt")
    assert pt["head.weight"] is pt["embed.weight"]


def test_views_and_equal_copies_are_not_ties():
    w = _weights()
    assert find_ties({"a": w, "b": w[:32], "c": w.T, "d": w.copy(), "e": w.reshape(32, 64)}) == {}
    assert find_ties({"a": w, "b": w, "c": np.zeros(0), "d": np.zeros(0)}) == {"b": "a"}
    lazy = {"a": w, "b": w}.items()  # only a dict, whose values are alive, is searched
    assert find_ties(dict(lazy)) == {"b": "a"}


def test_without_digests_tied_weights_are_coded_under_each_name():
    w = _weights()
    data = nu.encode({"a": w, "b": w}, config=nu.EncoderConfig(digests=False))
    assert data[8] == 3
    decoded = nu.decode(data)
    assert list(decoded) == ["a", "b"] and np.array_equal(decoded["a"], decoded["b"])


def test_workers_write_the_same_bytes_with_ties():
    w, v = _weights(1), _weights(2)
    tensors = {"a": w, "b": v, "c": w, "d": v, "e": w}
    one = nu.encode_with_report(tensors).data
    two = nu.encode_with_report(tensors, workers=2).data
    assert one == two
    assert [(t.name, t.alias_of) for t in nu.decode_tensors(one).tensors] == [
        ("a", None), ("c", "a"), ("e", "a"), ("b", None), ("d", "b")]


def test_model_digest_of_a_state_dict_orders_aliases_as_the_stream_does():
    ints = np.arange(12, dtype=np.int32).reshape(3, 4)  # lossless: the digest of the input is the stream's
    tensors = {"x": ints, "y": np.ones(3, np.int8), "z": ints}
    assert nu.model_digest_of(tensors) == nu.decode_tensors(nu.encode(tensors)).model_digest


def test_safetensors_and_npz_outputs_write_every_name(tmp_path):
    w = _weights()
    (tmp_path / "m.nnu").write_bytes(nu.encode({"a": w, "b": w}))
    for output in ("back.safetensors", "back.npz"):
        assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / output), "-q"]) == EXIT_OK
    loaded, _ = load_checkpoint(tmp_path / "back.safetensors")
    npz = np.load(tmp_path / "back.npz")
    assert list(loaded) == ["a", "b"] and np.array_equal(loaded["a"], loaded["b"])
    assert np.array_equal(npz["a"], npz["b"])


def test_info_and_report_show_the_aliases(tmp_path, capsys):
    torch.save(TiedModel().state_dict(), tmp_path / "m.pt")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "-q",
                 "--report", str(tmp_path / "r.json")]) == EXIT_OK
    report = json.loads((tmp_path / "r.json").read_text())
    assert [t["aliases"] for t in report["tensor_reports"]] == [["head.weight"], [], []]
    assert any("head.weight: tied to embed.weight" in note for note in report["notes"])
    capsys.readouterr()
    assert main(["info", str(tmp_path / "m.nnu"), "--json"]) == EXIT_OK
    rows = json.loads(capsys.readouterr().out)["tensors"]
    assert [(r["name"], r["alias_of"], r["payload_bytes"] == 0) for r in rows] == [
        ("embed.weight", None, False), ("head.weight", "embed.weight", True),
        ("mid.weight", None, False), ("mid.bias", None, False)]
    assert main(["info", str(tmp_path / "m.nnu")]) == EXIT_OK
    assert "alias of embed.weight" in capsys.readouterr().out


def test_projection_keeps_ties(tmp_path):
    torch.save(TiedModel().state_dict(), tmp_path / "m.pt")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "-q", "--unify-ratio", "0.3",
                 "--block", "2x2"]) == EXIT_OK
    model = nu.decode_tensors((tmp_path / "m.nnu").read_bytes())
    assert [t.alias_of for t in model.tensors] == [None, "embed.weight", None, None]


def test_hugging_face_tied_model_round_trips(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    bert = transformers.BertForMaskedLM(config).eval()
    source = tmp_path / "source"
    source.mkdir()
    config.save_pretrained(source)
    state = bert.state_dict()  # the decoder is tied to the word embeddings
    torch.save(state, source / "pytorch_model.bin")
    assert "cls.predictions.decoder.weight" in find_ties(state)
    assert main(["encode", str(source), str(tmp_path / "m.nnu"), "-q", "--qp", "-48"]) == EXIT_OK
    data = (tmp_path / "m.nnu").read_bytes()
    assert data[8] == 5
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "decoded") + "/", "-q"]) == EXIT_OK
    loaded = transformers.BertForMaskedLM.from_pretrained(tmp_path / "decoded").eval()
    decoded = nu.decode(data)
    for name, value in loaded.state_dict().items():
        assert np.array_equal(value.numpy(), decoded[name]), name
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    ids = torch.tensor([[1, 5, 7, 2]])
    with torch.no_grad():
        ours, theirs = loaded(ids).logits, bert(ids).logits
    assert torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0) > 0.999


def test_the_encode_summary_says_how_its_counts_meet_the_names_decoding_gives(tmp_path, capsys):
    """The encoder counts what it stores; decoding counts every name. With a tie the summary
    gives both, so the two commands' figures can be told apart."""
    torch.save(TiedModel().state_dict(), tmp_path / "m.pt")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu")]) == EXIT_OK
    line = capsys.readouterr().out.splitlines()[0]
    assert main(["decode", "--json", str(tmp_path / "m.nnu"), str(tmp_path / "back.safetensors")]) == EXIT_OK
    decoded = json.loads(capsys.readouterr().out)
    assert f"with the 1 tied name coded once: {decoded['tensors']} tensors, {decoded['parameters']:,} parameters" \
        in line
    assert main(["encode", "-f", "--json", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu")]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert (summary["tensors_by_name"], summary["parameters_by_name"]) == (decoded["tensors"], decoded["parameters"])
    assert summary["tensors"] == decoded["tensors"] - 1


def test_excluding_a_tied_name_keeps_the_tensor_it_shares_unprojected(tmp_path, capsys):
    """--exclude 'head*' on a model whose head is the embedding: the head keeps its values,
    so the embedding is not projected either, and the summary says why."""
    model = TiedModel()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "--qp", "-48", "--prune-ratio", "0.5",
                 "--exclude", "head*", "--json"]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert "embed.weight: not projected: --exclude names a tied name of it" in summary["notes"]
    assert [t["name"] for t in summary["projection"]["tensors"]] == ["mid.weight"]
    decoded = nu.decode((tmp_path / "m.nnu").read_bytes())
    assert np.count_nonzero(decoded["head.weight"] == 0) < 5  # not half pruned


def test_a_tied_name_that_a_rule_codes_otherwise_is_coded_on_its_own():
    """A rule on the alias (RAW here) was ignored: the alias came back lossy, as its target."""
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    config = nu.EncoderConfig(rules=(nu.TensorRule("v", mode=nu.CodingMode.RAW),))
    result = nu.encode_with_report({"w": w, "v": w}, config=config)
    assert [(r.name, r.mode.name, r.aliases) for r in result.reports] == [("w", "DENSE", ()), ("v", "RAW", ())]
    assert nu.decode(result.data)["v"].tobytes() == w.tobytes()
    # a rule that matches both names keeps them tied
    both = nu.EncoderConfig(rules=(nu.TensorRule("*", qp=-20),))
    assert [r.aliases for r in nu.encode_with_report({"w": w, "v": w}, config=both).reports] == [("v",)]
