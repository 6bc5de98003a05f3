"""The ``nncodec`` command: argument parsing and printing only.

Results go to stdout; progress goes to stderr, and only when stderr is a terminal. Every user
error (bad arguments, missing files, bad data) ends in one line on stderr and a distinct exit
code, with no traceback and no output file left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fnmatch
import glob
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import BrokenExecutor
from pathlib import Path

from . import __version__
from .codec.checkpoint import (
    DEFAULT_MAX_SHARD_BYTES,
    CheckpointError,
    MissingDependencyError,
    atomic_output,
    checkpoint_format,
    decode_into,
    load_checkpoint,
    decode_to_safetensors_file,
    folder_attachments,
    input_missing,
    is_folder_target,
    read_stream,
    write_bytes,
)
from .codec.config import EncoderConfig, TensorRule
from .codec.decoder import describe
from .codec.errors import BitstreamError, EncodeError, LimitExceededError, NncodecError, OutputExistsError
from .codec.bitio import ByteReader
from .codec.format import DTYPE_NAMES, FILE_HEADER_SIZE, FLOAT_DTYPES, CodingMode, Limits
from .codec.layout import OVERHEAD_CATEGORIES, stream_layout
from .codec.syntax import read_file_header
from .codec.memory import FileMapping
from .codec.quant import step_size
from .codec import termination

EXIT_OK = 0
EXIT_FAILURES = 1  # a command ran but found failures (e.g. conformance)
EXIT_USAGE = 2  # bad arguments (argparse uses 2 too)
EXIT_IO = 3  # a file could not be read or written
EXIT_BAD_INPUT = 4  # the input is not a valid stream or weight file
EXIT_ENCODE = 5  # the encoder cannot represent the input with these options
EXIT_EXISTS = 6  # the output exists and -f was not given
EXIT_LIMIT = 7  # a stream exceeds a decoder limit (valid, maybe, but too large to accept)
EXIT_DEPENDENCY = 8  # an optional package (torch, scikit-learn) needed for this is missing
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader went away (e.g. `| head`); nothing is printed


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, our exit code
        raise UsageError(message)


def _block(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"block shape must look like 4x4, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _byte_size(text: str) -> int:
    """A size such as 5GB, 500MB, 64KiB or 123456 (bytes)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", text, flags=re.I)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 5GB, 500MB, 123456)")
    unit = (match.group(2) or "B").upper()
    base = 1024 if "I" in unit else 1000
    size = int(float(match.group(1)) * base ** "BKMGT".index(unit[0]))
    if size < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the size must be at least one byte")
    return size


MAX_AUTO_WORKERS = 4
AUTO_WORKERS_FROM = 32 << 20  # below this, starting worker processes costs more than it saves
# decoding: by the stream's size, which needs no pass over it (a pass would also change which
# error an invalid stream reports first). A 65 MB stream (a 509 MiB model) decodes 1.21x
# faster with 2 workers; all-MiniLM-L6-v2's 14 MB stream no faster.


def _workers(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or auto, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {count}")
    return count


def _auto_workers(source: str, tensor_count: int) -> int:
    """Worker processes for ``--workers auto``: one per available core (at most
    MAX_AUTO_WORKERS) when the input is large enough for processes to pay, else 1. On
    all-MiniLM-L6-v2 (91 MB, 2 cores) 2 workers encode in 6.6 s against 9.3 s."""
    path = Path(source)
    files = [path] if path.is_file() else [f for f in path.glob("*") if f.suffix in (".safetensors", ".bin", ".pt")]
    return _workers_for(sum(f.stat().st_size for f in files if f.is_file()), tensor_count)


def _workers_for(size: int, tensor_count: int) -> int:
    """``--workers auto`` for ``size`` bytes (the tensors an encode reads, the stream a
    decode reads) of ``tensor_count`` tensors."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    if size < AUTO_WORKERS_FROM or tensor_count < 2:
        return 1
    return max(1, min(cores, MAX_AUTO_WORKERS, tensor_count))


def _pattern_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected PATTERN=VALUE, got {text!r}")
    pattern, value = text.rsplit("=", 1)
    return pattern, value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nncodec", description="Compress neural-network weights with micro-structured "
                     "unification and pruning into a versioned, bit-exact bitstream.")
    parser.add_argument("--version", action="version", version=f"nncodec_unify {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    encode = commands.add_parser("encode", help="encode a .pt/.pth/.safetensors file or a model folder into a stream")
    encode.add_argument("input", help="a .pt/.pth state_dict (or checkpoint holding one), .safetensors, or a "
                        "Hugging Face model folder (model.safetensors, shards + index, or pytorch_model.bin)")
    encode.add_argument("--key", default=None, metavar="KEY",
                        help="the state_dict to take from a .pt checkpoint dict (e.g. ema, model); by default "
                             "the dict itself or its state_dict/model/module entry")
    encode.add_argument("--strip-prefix", action="append", default=[], metavar="PREFIX",
                        help="remove PREFIX from tensor names (module. for DDP, _orig_mod. for torch.compile; "
                             "repeatable)")
    encode.add_argument("--no-attach", action="store_true",
                        help="for a model folder: do not carry its other files (config, tokenizer) in the stream")
    encode.add_argument("output", help="the stream to write (.nnu), or - for stdout (then the summary goes to stderr)")
    encode.add_argument("--qp", type=int, default=EncoderConfig.qp,
                        help="quantization parameter of >=2-D float tensors (step 2**(qp/4); default %(default)s = 2**-8)")
    encode.add_argument("--vector-qp", type=int, default=None,
                        help=f"qp of 1-D and 0-D float tensors (default {EncoderConfig.vector_qp}; with a rate "
                             f"target, {EncoderConfig.vector_qp - EncoderConfig.qp} from the qp searched, unless given)")
    encode.add_argument("--block", type=_block, default=EncoderConfig.block, metavar="RxC",
                        help="block shape of UNIFIED tensors (default 4x4)")
    encode.add_argument("--mode", type=_pattern_value, action="append", default=[], metavar="PATTERN=MODE",
                        help="code tensors matching the glob PATTERN as raw, dense or unified (repeatable)")
    encode.add_argument("--tensor-qp", type=_pattern_value, action="append", default=[], metavar="PATTERN=QP",
                        help="qp for tensors matching PATTERN (repeatable)")
    encode.add_argument("--tensor-block", type=_pattern_value, action="append", default=[], metavar="PATTERN=RxC",
                        help="block shape for tensors matching PATTERN (repeatable)")
    encode.add_argument("--no-contexts", action="store_true",
                        help="code levels without row/column contexts or column offsets (faster, a little larger)")
    encode.add_argument("--workers", type=_workers, default="auto", metavar="N|auto",
                        help="code tensors in N processes, the same bytes as one (default auto: one per core, "
                             f"at most {MAX_AUTO_WORKERS}, for inputs of {AUTO_WORKERS_FROM >> 20} MiB or more; "
                             "else 1)")
    encode.add_argument("--no-digests", action="store_true",
                        help="write no content digests and no stream_end unit: a format 2.0/3.0/3.1 stream for "
                             "decoders older than nncodec_unify 0.4 (the decoder can then not prove its result)")
    rdo = encode.add_argument_group(
        "rate-distortion optimization (on by default: each level, and each block's kind, is chosen by "
        "error + lambda x bits; a weight's error may then exceed half a step)")
    rdo.add_argument("--no-dq", action="store_true",
                     help="scalar levels instead of dependent (trellis) quantization: about 3%% larger "
                          "at equal error, but a format 2.0 stream that any 2.x decoder reads")
    rdo.add_argument("--no-rdo", action="store_true",
                     help="round every weight to the nearest level (error <= half a step; implies --no-dq)")
    rdo.add_argument("--rdo-lambda", type=float, default=None, metavar="C",
                     help=f"lambda = C x step**2 (default {EncoderConfig.rdo_lambda}; larger trades more error "
                          "for fewer bits)")
    rdo.add_argument("--no-rdo-blocks", action="store_true",
                     help="keep block kinds as the levels fall instead of choosing them by cost")
    rate = encode.add_argument_group("rate control (searches the qp, starting from --qp; rule qps stay fixed)")
    targets = rate.add_mutually_exclusive_group()
    targets.add_argument("--target-size", type=int, default=None, metavar="BYTES",
                         help="the finest qp whose stream is at most BYTES long")
    targets.add_argument("--target-bits-per-param", type=float, default=None, metavar="X",
                         help="the finest qp within X bits per parameter")
    targets.add_argument("--target-rmse", type=float, default=None, metavar="E",
                         help="the coarsest qp whose RMSE over >=2-D float tensors is at most E")
    projection = encode.add_argument_group(
        "post-training unification and pruning (no training data needed; the distortion is reported)")
    projection.add_argument("--prune-ratio", type=float, default=0.0, metavar="P",
                            help="fraction of each weight matrix's blocks to prune (set to zero)")
    projection.add_argument("--unify-ratio", type=float, default=0.0, metavar="U",
                            help="fraction of blocks to unify (one magnitude, own signs)")
    projection.add_argument("--unify-threshold", type=float, default=None, metavar="T",
                            help="instead of --unify-ratio: unify blocks whose relative unification loss is <= T")
    projection.add_argument("--global-budget", action="store_true",
                            help="spread the ratios over all layers by cost instead of per layer")
    projection.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                            help="leave tensors matching PATTERN unprojected (repeatable)")
    projection.add_argument("--exclude-first-last", action="store_true",
                            help="leave the first and last weight matrices unprojected, in the input's order (a "
                            ".pt file's module order, a safetensors file's name order); the summary names them")
    encode.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    encode.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    encode.add_argument("--report", metavar="FILE.json", default=None,
                        help="also write the summary and every tensor's coding, size and error to FILE.json "
                             "(- : to stdout, in place of the summary)")
    encode.add_argument("-f", "--force", action="store_true", help="overwrite the output (and --report) if it exists")

    decode = commands.add_parser("decode", help="decode a stream into .pt, .safetensors, .npz or a model folder")
    decode.add_argument("input", help="the stream to decode (.nnu), or - to read it from stdin")
    decode.add_argument("output", help="ends in .pt/.pth, .safetensors or .npz; - for safetensors on stdout; or a "
                        "folder (ending in /): "
                        "model.safetensors plus the stream's attached files, loadable by from_pretrained")
    decode.add_argument("--max-output-bytes", type=int, default=None, metavar="N",
                        help="refuse streams that would decode to more than N bytes (default "
                             f"{Limits().max_total_output_bytes:,}, the decoder's own limit)")
    decode.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")
    decode.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    decode.add_argument("--json", action="store_true", help="print the result as one JSON object")
    decode.add_argument("--no-verify", action="store_true",
                        help="skip comparing each decoded tensor with its content digest (6-9%% faster; "
                             "every other check stays)")
    decode.add_argument("--workers", type=_workers, default="auto", metavar="N|auto",
                        help="decode tensors in N processes, the same tensors as one (default auto: one per core, "
                             f"at most {MAX_AUTO_WORKERS}, for a stream of {AUTO_WORKERS_FROM >> 20} MiB or more); "
                             "memory then holds up to 2 tensors per worker and 256 MiB of finished ones")
    decode.add_argument("--max-shard-size", type=_byte_size, default=DEFAULT_MAX_SHARD_BYTES, metavar="SIZE",
                        help="folder output: split the weights into shards of at most SIZE (e.g. 5GB, 500MB; "
                             "default 5GB, as transformers) with an index")

    demo = commands.add_parser("demo", help="train a small CNN on real digits, unify+prune with ADMM, "
                               "encode, decode and evaluate the decoded model")
    demo.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    demo.add_argument("--epochs", type=int, default=30, help="dense training epochs, also the ADMM epochs; the fine-tuning runs half as many (default %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data split and training (default %(default)s)")
    demo.add_argument("--verbose", action="store_true", help="progress on stderr even when it is not a terminal")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    verify = commands.add_parser("verify", help="decode a stream completely and check every digest, writing "
                                 "nothing (as gzip -t)")
    verify.add_argument("input", help="the stream to check (.nnu), or - to read it from stdin")
    verify.add_argument("--model-digest", metavar="HEX", default=None,
                        help="also require this model digest (the SHA-256 that encode and info print): exit 1 "
                             "if the stream holds another model")
    verify.add_argument("--max-output-bytes", type=int, default=None, metavar="N",
                        help="refuse streams that would decode to more than N bytes")
    verify.add_argument("-q", "--quiet", action="store_true", help="no progress, and no output when the stream is good")
    verify.add_argument("--json", action="store_true", help="print the result as one JSON object")

    info = commands.add_parser("info", help="show a stream's version and tensors")
    info.add_argument("input", help="the stream to describe (.nnu), or - to read it from stdin")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--bytes", action="store_true",
                      help="also show where the bytes go (headers, digests, tables, coded values, signs), in all "
                           "(per tensor unit with --json; an alias's bytes are its tensor's); decodes and verifies "
                           "the whole stream (about twice a decode's time)")

    conform = commands.add_parser("conform", help="check the decoder against a conformance suite "
                                  "(a directory with valid/ and invalid/)")
    conform.add_argument("directory", help="e.g. conformance/")
    conform.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()
        return EXIT_USAGE
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"nncodec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with _printable_paths():
        return _run(args)


@contextlib.contextmanager
def _printable_paths():
    """stdout and stderr write what they cannot encode as backslash escapes while the command
    runs: a file name that is not valid UTF-8 (its bytes kept as lone surrogates) would
    otherwise raise UnicodeEncodeError in a summary or an error line, after the output was
    written."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure") and getattr(stream, "errors", None) == "strict":
            with contextlib.suppress(Exception):
                stream.reconfigure(errors="backslashreplace")
                changed.append(stream)
    try:
        yield
    finally:
        for stream in changed:
            with contextlib.suppress(Exception):
                stream.reconfigure(errors="strict")


def _run(args: argparse.Namespace) -> int:
    """The chosen command's handler, with the exit statuses and one-line errors of :func:`main`."""
    handler = {"encode": _encode, "decode": _decode, "verify": _verify, "info": _info, "demo": _demo,
               "conform": _conform}[args.command]
    previous = {}
    termination.reset()
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                previous[getattr(signal, name)] = signal.signal(getattr(signal, name), termination.on_signal)
    try:
        status = handler(args)
        termination.check()  # the signal's exception may have been dropped inside a finalizer
        return status
    except termination.Terminated as exc:
        return _fail(f"terminated by {signal.Signals(exc.signum).name}; no output was written", 128 + exc.signum)
    except BrokenPipeError:
        # the reader closed the pipe: stop quietly, and keep Python from complaining at exit
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OutputExistsError as exc:
        return _fail(f"{exc.filename}: {exc.detail} (use -f to overwrite)", EXIT_EXISTS)
    except FileExistsError as exc:
        return _fail(str(exc), EXIT_EXISTS)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        return _fail(str(exc) if not exc.filename else f"{exc.filename}: {exc.strerror}", EXIT_IO)
    except EncodeError as exc:
        return _fail(f"cannot encode: {exc}", EXIT_ENCODE)
    except LimitExceededError as exc:
        return _fail(f"{getattr(args, 'input', '')}: exceeds a decoder limit: {exc}", EXIT_LIMIT)
    except MissingDependencyError as exc:
        return _fail(str(exc), EXIT_DEPENDENCY)
    except BitstreamError as exc:
        return _fail(f"{getattr(args, 'input', '')}: invalid stream: {exc}", EXIT_BAD_INPUT)
    except (CheckpointError, NncodecError) as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    except OSError as exc:
        where = exc.filename
        if where is None and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # a write to stdout
            where = "standard output" if getattr(args, "output", None) == "-" else getattr(args, "output", "")
        return _fail(f"{where or ''}: {exc.strerror or exc}", EXIT_IO)
    except MemoryError:
        return _fail("out of memory (for a stream, lower --max-output-bytes to refuse it up front)", EXIT_IO)
    except BrokenExecutor:
        return _fail("a worker process ended abruptly (out of memory? try fewer --workers)", EXIT_IO)
    except KeyboardInterrupt:
        return _fail("interrupted; no output was written", 130)
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)
        termination.reset()  # a later call in this process (the library, another main) starts afresh


def _fail(message: str, code: int) -> int:
    print(f"nncodec: error: {_shown(message)}", file=sys.stderr)  # one line, whatever a path holds
    return code


def _progress_printer(args: argparse.Namespace, what: str, unit: str = "tensor"):
    """A ``progress(done, total, name)`` reporter on stderr for ``what`` (``unit``s: tensors
    encoded or decoded, streams checked): a tqdm bar when tqdm is installed, else a counter
    line; None when stderr is not a terminal, with --quiet, or with --json (whose stdout must
    stay one JSON object)."""
    if getattr(args, "quiet", False) or getattr(args, "json", False) or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    bar = None

    def report(done: int, total: int, name: str) -> None:
        nonlocal bar
        if tqdm is not None:
            if bar is None:
                bar = tqdm(total=total, desc=what, unit=unit, file=sys.stderr, leave=False)
            bar.set_postfix_str(name[:40], refresh=False)
            bar.update(done + 1 - bar.n)
            if done + 1 >= total:
                bar.close()
                bar = None  # a next pass (a rate-control trial) gets a bar of its own
            return
        print(f"\r{what} [{done + 1}/{total}] {name[:60]:<60}", end="" if done + 1 < total else "\n",
              file=sys.stderr, flush=True)

    return report


class _EpochBars:
    """Training epochs as tqdm bars on stderr, one per phase (the demo's dense, ADMM and
    fine-tuning epochs); lines go above the bar (``write``)."""

    def __init__(self, tqdm):
        self._tqdm, self._bar, self._phase = tqdm, None, None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self._phase:
            self.close()
            self._bar = self._tqdm(total=total, desc=f"{phase} epochs", unit="epoch", file=sys.stderr, leave=False)
            self._phase = phase
        self._bar.update(done - self._bar.n)

    def write(self, line: str) -> None:
        self._tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._phase = None, None


def _epoch_bars() -> _EpochBars | None:
    """:class:`_EpochBars` when tqdm is installed (else the demo's lines alone)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return _EpochBars(tqdm)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def _config(args: argparse.Namespace) -> EncoderConfig:
    rules = []
    for pattern, mode in args.mode:
        try:
            rules.append(TensorRule(pattern, mode=CodingMode[mode.upper()]))
        except KeyError:
            raise UsageError(f"--mode {pattern}={mode}: mode must be raw, dense or unified") from None
    for pattern, qp in args.tensor_qp:
        try:
            rules.append(TensorRule(pattern, qp=int(qp)))
        except ValueError:
            raise UsageError(f"--tensor-qp {pattern}={qp}: qp must be an integer") from None
    for pattern, block in args.tensor_block:
        try:
            rules.append(TensorRule(pattern, block=_block(block)))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"--tensor-block: {exc}") from None
    try:
        rdo_lambda = EncoderConfig.rdo_lambda if args.rdo_lambda is None else args.rdo_lambda
        vector_qp = EncoderConfig.vector_qp if args.vector_qp is None else args.vector_qp
        if args.vector_qp is None and _rate_target(args) is not None:  # the result must not depend on the start
            vector_qp = args.qp + (EncoderConfig.vector_qp - EncoderConfig.qp)
        return EncoderConfig(qp=args.qp, vector_qp=vector_qp, block=args.block, rules=tuple(rules),
                             use_contexts=not args.no_contexts, rdo=not args.no_rdo, rdo_lambda=rdo_lambda,
                             rdo_blocks=not args.no_rdo_blocks, dependent=not args.no_dq,
                             dependent_lambda=rdo_lambda, digests=not args.no_digests)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _encode(args: argparse.Namespace) -> int:
    from .codec.encoder import encode_to_file, model_records
    from .codec.memory import keep_large_blocks_mapped

    keep_large_blocks_mapped()
    if args.output == "-":
        _stdout_apart_from(args.input)
    if args.input == "-":
        raise UsageError("weights cannot be read from stdin: give a .pt/.safetensors file or a model folder")
    if args.no_rdo and args.rdo_lambda is not None:
        raise UsageError("--rdo-lambda sets the rate-distortion trade-off, which --no-rdo turns off: give one")
    config = _config(args)
    if args.output != "-" and is_folder_target(args.output):
        raise UsageError(f"{args.output}: the stream is one file; give its path, not a folder's")
    if args.output != "-" and _same_file(args.input, args.output):
        raise UsageError("input and output are the same file")
    if args.output != "-" and os.path.exists(args.output) and not args.force:
        raise OutputExistsError(args.output)
    _check_report_path(args)
    tensors, checkpoint_notes = load_checkpoint(args.input, key=args.key, strip_prefixes=tuple(args.strip_prefix))
    attachments, attachment_notes = [], []
    if os.path.isdir(args.input) and not args.no_attach:
        own_files = [path for path in (args.output, args.report) if path not in (None, "-")]
        attachments, attachment_notes = folder_attachments(args.input, leave_out=own_files)
    projected, projection_notes = _project(tensors, args, config) if _projection_asked(args) else (None, [])
    if projected is not None:
        tensors = projected
    workers = _auto_workers(args.input, len(tensors)) if args.workers == "auto" else args.workers
    target = _rate_target(args)
    controlled = None

    report_written: list[Path] = []  # the --report file, once finish() has written it

    def finish(reports, size: int, header: bytes) -> tuple[dict, dict | None]:
        """The summary of the stream just written and the --report's content (None without
        one). A --report file is written here, before the stream is committed: a report that
        cannot be written (a full disk) leaves neither file behind."""
        summary = _summary(args.input, args.output, reports, size)
        summary["attached_files"] = [attached.path for attached in attachments]
        summary["attached_bytes"] = sum(len(attached.content) for attached in attachments)
        summary["notes"] += checkpoint_notes + attachment_notes + _unmatched_rules(args, reports)
        summary["rdo"] = {"lambda": config.rdo_lambda, "blocks": config.rdo_blocks} if config.rdo else None
        summary["dependent_quantization"] = config.dependent
        summary["format"] = f"{header[8]}.{header[9]}"  # the version the encoder chose
        summary["model_digest"] = _model_digest_hex(model_records(reports))
        summary["workers"] = workers
        if controlled is not None:
            summary["rate_control"] = {"target": target.describe(), **controlled.to_dict()}
            matrices = [r for r in reports if len(r.shape) >= 2 and r.dtype in FLOAT_DTYPES]
            if matrices and not any(r.qp == controlled.chosen.qp for r in matrices):
                summary["notes"].append(f"rate control moved only the vector qp: no tensor of 2 or more dimensions "
                                        f"is coded at the searched qp {controlled.chosen.qp} (rules or RAW coding "
                                        "set theirs)")
        if projected is not None:
            summary["projection"] = projected.report().to_dict()
            summary["notes"] += projection_notes
            summary["notes"].append("the errors above are the coding's, against the projected weights; the "
                                    "projection's own distortion (against the input) is in the projection table")
        report = None
        if args.report is not None:
            report = dict(summary, tensor_reports=[_tensor_report(r) for r in reports])
            if args.report != "-":
                write_bytes(args.report, (json.dumps(report, indent=1) + "\n").encode("utf-8"), overwrite=args.force)
                report_written.append(Path(args.report))
        return summary, report

    @contextlib.contextmanager
    def committed_with_report(path: Path):
        """``atomic_output(path)``; when the stream cannot be committed after the --report was
        written (a failed rename), the report goes too: it would describe a stream that is not there."""
        try:
            with atomic_output(path, overwrite=args.force) as temporary:
                yield temporary
        except BaseException:
            for written_report in report_written:
                with contextlib.suppress(OSError):
                    written_report.unlink()
            raise

    if target is None:  # units go to the output as they are coded: the stream is never held whole
        def encode_into(file) -> _Counting:
            counting = _Counting(file)
            nonlocal reports
            reports = encode_to_file(tensors, counting, config=config, measure_error=True,
                                     progress=_progress_printer(args, "encoding"), workers=workers,
                                     attachments=attachments)
            return counting

        reports = ()
        if args.output == "-":  # a pipe: written as coded (a failure midway leaves the reader a cut stream)
            written = encode_into(sys.stdout.buffer)
            sys.stdout.buffer.flush()
            summary, report = finish(reports, written.count, written.head)
        else:
            with committed_with_report(Path(args.output)) as temporary, open(temporary, "wb") as file:
                written = encode_into(file)
                summary, report = finish(reports, written.count, written.head)  # the report first: see finish
    else:
        from .codec.ratecontrol import encode_to_target

        # each trial on a terminal, like progress; the choice is in the summary either way
        shown = not (args.json or args.quiet) and sys.stderr.isatty()
        say = (lambda line: print(line, file=sys.stderr)) if shown else None
        try:
            controlled = encode_to_target(tensors, target, config=config, progress=say, workers=workers,
                                          keep_vector_qp=args.vector_qp is not None, attachments=attachments,
                                          tensor_progress=_progress_printer(args, "rate control"))
        except EncodeError as exc:
            carried = sum(len(attached.content) for attached in attachments)
            if target.size_bytes is None or carried < target.size_bytes / 10:  # the files are not the reason
                raise
            raise EncodeError(f"{exc} (the folder's attached files alone take {carried:,} bytes of it; "
                              "--no-attach leaves them out)") from None
        data = controlled.result.data
        if args.output == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            summary, report = finish(controlled.result.reports, len(data), data[:10])
        else:
            with committed_with_report(Path(args.output)) as temporary:
                Path(temporary).write_bytes(data)
                summary, report = finish(controlled.result.reports, len(data), data[:10])
    if args.report == "-":  # the report, in place of the summary, on stdout
        print(json.dumps(report, indent=1))
        return EXIT_OK
    # with the stream on stdout, the summary goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.output == "-" else contextlib.nullcontext():
        _print_encoded(args, summary, projected, target, controlled if target is not None else None)
    return EXIT_OK


def _check_report_path(args: argparse.Namespace) -> None:
    """Refuse, before anything is encoded, a --report that could not be written or would
    replace the input or the stream: ``-`` (stdout) with the stream on stdout, the input or
    output file itself, a folder, a path in a folder that does not exist."""
    report = args.report
    if report is None:
        return
    if report == "-":
        if args.output == "-":
            raise UsageError("--report - would mix the report into the stream on stdout")
        return
    if _same_file(args.input, report) or (args.output != "-" and (
            os.path.abspath(report) == os.path.abspath(args.output) or _same_file(args.output, report))):
        raise UsageError(f"--report {report}: is the {'input' if _same_file(args.input, report) else 'output'} "
                         "file; give the report its own name")
    if os.path.isdir(report):
        raise UsageError(f"--report {report}: is a folder; give a file name")
    if os.path.lexists(report) and not args.force:  # as for the stream: an existing file needs -f
        raise OutputExistsError(report)
    folder = os.path.dirname(os.path.abspath(report))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--report {report}: {folder}: no such directory")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"--report {report}: {folder}: not writable")


class _Counting:
    """A binary file wrapper that counts the bytes written and keeps the first ten (the file
    header: magic and version)."""

    def __init__(self, file):
        self.file, self.count, self.head = file, 0, b""

    def write(self, data: bytes) -> int:
        if len(self.head) < 10:
            self.head += bytes(data[:10 - len(self.head)])
        self.count += len(data)
        return self.file.write(data)


def _print_encoded(args, summary: dict, projection, target, controlled) -> None:
    if args.json:
        print(json.dumps(summary))
    else:
        if projection is not None:
            for line in projection.report().lines():
                print(line)
        if target is not None:
            chosen = controlled.chosen
            print(f"rate control ({target.describe()}): chose qp {chosen.qp} (vector qp {chosen.vector_qp}) "
                  f"after {len(controlled.trials)} encodes: {chosen.size_bytes:,} bytes, "
                  f"{chosen.bits_per_param:.3f} bits/parameter, RMSE {chosen.rmse:.4g}")
        _print_summary(summary)


def _model_digest_hex(records: list[tuple]) -> str | None:
    """The model digest (spec §5.8) of ``(name, dtype, shape, content_digest)`` records, in
    hex; None when they carry no digests (a stream of format 2.x or 3.x)."""
    from .codec.integrity import model_digest

    if any(record[3] is None for record in records):
        return None
    return model_digest(records).hex()


def _unmatched_rules(args: argparse.Namespace, reports) -> list[str]:
    """Notes for --mode/--tensor-qp/--tensor-block patterns that matched no tensor (a typo
    would otherwise go unnoticed)."""
    import fnmatch

    names = [report.name for report in reports]
    notes = []
    for option in ("mode", "tensor_qp", "tensor_block"):
        for pattern, _ in getattr(args, option):
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                notes.append(f"--{option.replace('_', '-')} {pattern}=...: the pattern matches no tensor")
    # a block shape for a matrix whose blocks all came out dense: it was coded DENSE, without blocks
    explicit = [pattern for pattern, _ in args.mode]
    for pattern, _ in args.tensor_block:
        for report in reports:
            if (fnmatch.fnmatchcase(report.name, pattern) and report.mode == CodingMode.DENSE and len(report.shape) >= 2
                    and not any(fnmatch.fnmatchcase(report.name, mode_pattern) for mode_pattern in explicit)):
                notes.append(f"--tensor-block {pattern}=...: {report.name} was coded DENSE, with no block grid (at "
                             f"most 1 % of its blocks came out pruned or unified; --mode {report.name}=unified keeps it)")
    return notes


def _rate_target(args: argparse.Namespace):
    """The RateTarget the options ask for, or None."""
    from .codec.ratecontrol import RateTarget

    if args.target_size is None and args.target_bits_per_param is None and args.target_rmse is None:
        return None
    try:
        return RateTarget(args.target_size, args.target_bits_per_param, args.target_rmse)
    except ValueError as exc:
        message = str(exc)
        for field, option in (("size_bytes", "--target-size"), ("bits_per_param", "--target-bits-per-param"),
                              ("rmse", "--target-rmse")):
            message = message.replace(f"{field} target", option)
        raise UsageError(message) from None


def _projection_asked(args: argparse.Namespace) -> bool:
    if args.unify_ratio and args.unify_threshold is not None:
        raise UsageError("--unify-ratio and --unify-threshold are alternatives: give one")
    asked = bool(args.prune_ratio or args.unify_ratio or args.unify_threshold is not None)
    shaping = [option for option, given in (("--global-budget", args.global_budget), ("--exclude", args.exclude),
                                            ("--exclude-first-last", args.exclude_first_last)) if given]
    if shaping and not asked:
        raise UsageError(f"{shaping[0]} shapes the projection, which --prune-ratio, --unify-ratio or "
                         "--unify-threshold asks for: give one of them")
    if asked and args.target_rmse is not None:  # it would be met on the projected weights only
        raise UsageError("--target-rmse measures the coding's error, not the projection's, which is larger: with "
                         "a projection give --target-size or --target-bits-per-param")
    return asked


def _project(tensors, args: argparse.Namespace, config: EncoderConfig):
    """The post-training projection, applied as the encoder reads each tensor (memory holds
    one projected tensor, not the model); bfloat16 tensors stay bfloat16 (no torch needed).
    Tensors that a rule codes RAW are left exactly as they are: the user asked to keep them.
    Tied weights are projected once and stay tied. Returns the mapping to encode (its
    ``report()`` is complete once the encoder has read every tensor) and notes for the summary."""
    from .codec.tensors import find_ties, to_source
    from .method.posttrain import project_lazily

    ties = find_ties(tensors)
    kept, blocks = [], {}
    for name, value in tensors.items():
        if name in ties:
            continue
        dtype = to_source(name, value)[1]  # bfloat16 not widened: no copy of the tensor is kept
        coding = config.coding_for(name, dtype, len(getattr(value, "shape", ())))
        if coding.mode == CodingMode.RAW and coding.explicit_mode:
            kept.append(name)
        blocks[name] = coding.block  # projected in the blocks it is coded in (--tensor-block)

    # an excluded name keeps its values, so the tensor it is tied to is not projected either
    tied_out = {target for alias, target in ties.items()
                if any(fnmatch.fnmatchcase(alias, pattern) for pattern in args.exclude)}
    try:
        projected = project_lazily(
            tensors, prune_ratio=args.prune_ratio, unify_ratio=args.unify_ratio,
            unify_threshold=args.unify_threshold, block=args.block, global_budget=args.global_budget,
            exclude=tuple(args.exclude) + tuple(glob.escape(name) for name in [*kept, *sorted(tied_out)]),
            exclude_first_last=args.exclude_first_last, ties=ties, blocks=blocks)
    except ValueError as exc:
        raise UsageError(f"projection: {exc}") from None
    notes = [f"{target}: not projected: --exclude names a tied name of it" for target in sorted(tied_out)]
    if projected.first_last:
        notes.append(f"--exclude-first-last left out {' and '.join(projected.first_last)} (the first and last "
                     "weight matrices in the input's order)")
    return projected, notes


def _demo(args: argparse.Namespace) -> int:
    try:
        from .method.demo import run_demo
    except ImportError as exc:
        return _fail(f"the demo needs torch and scikit-learn: pip install -e '.[demo]' ({exc})", EXIT_DEPENDENCY)
    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    # progress (each training epoch) on a terminal, or when asked; never with --quiet or --json
    verbose = not args.quiet and (args.verbose or (sys.stderr.isatty() and not args.json))
    bars = _epoch_bars() if verbose and sys.stderr.isatty() else None
    say = (bars.write if bars else (lambda line: print(line, file=sys.stderr, flush=True))) if verbose else None
    try:
        result = run_demo(epochs=args.epochs, seed=args.seed, progress=say, epoch_progress=bars)
    finally:
        if bars:
            bars.close()
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    print(f"dense accuracy       {result['dense_accuracy']:.2%}")
    print(f"compressed accuracy  {result['compressed_accuracy']:.2%}  (the decoded model)")
    print(f"bitstream            {result['bitstream_bytes']:,} bytes")
    print(f"compression ratio    {result['compression_ratio']:.1f}x against fp32")
    print(f"bit-exact            {'yes' if result['bit_exact'] else 'NO'}  (decoded weights == fine-tuned weights)")
    return EXIT_OK


def _summary(source: str, target: str, reports, size: int) -> dict:
    original = sum(r.original_bytes for r in reports)
    parameters = sum(int(_count(r.shape)) for r in reports)
    kinds: dict[str, dict] = {}
    for report in reports:
        kind = kinds.setdefault(report.mode.name.lower(), {"tensors": 0, "original_bytes": 0, "coded_bytes": 0,
                                                            "max_abs_error": 0.0})
        kind["tensors"] += 1
        kind["original_bytes"] += report.original_bytes
        kind["coded_bytes"] += report.coded_bytes
        kind["max_abs_error"] = max(kind["max_abs_error"], report.max_abs_error)
    blocks = [r.block_counts for r in reports if r.block_counts]
    return {
        "input": source, "output": target, "tensors": len(reports), "parameters": parameters,
        "tensors_by_name": sum(1 + len(r.aliases) for r in reports),  # as decode, info and verify count them
        "parameters_by_name": sum((1 + len(r.aliases)) * int(_count(r.shape)) for r in reports),
        "original_bytes": original, "compressed_bytes": size,
        "compression_ratio": original / size if size else 0.0,
        "bits_per_parameter": 8 * size / parameters if parameters else 0.0,
        "by_mode": kinds,
        "blocks": {"pruned": sum(b[0] for b in blocks), "unified": sum(b[1] for b in blocks),
                   "dense": sum(b[2] for b in blocks)},
        "notes": [f"{r.name}: {r.note}" for r in reports if r.note]
        + [f"{alias}: tied to {r.name}, coded once (an alias, format 5.0)" for r in reports for alias in r.aliases],
    }


def _tensor_report(report) -> dict:
    """One tensor of ``encode --report``."""
    count = _count(report.shape)
    return {"name": report.name, "dtype": DTYPE_NAMES[report.dtype], "shape": list(report.shape),
            "mode": report.mode.name.lower(), "qp": report.qp, "original_bytes": report.original_bytes,
            "coded_bytes": report.coded_bytes, "bits_per_parameter": 8 * report.coded_bytes / count if count else None,
            "max_abs_error": report.max_abs_error,
            "rmse": (report.squared_error / count) ** 0.5 if count else 0.0,
            "blocks": dict(zip(("pruned", "unified", "dense"), report.block_counts, strict=True))
            if report.block_counts else None, "note": report.note,
            "content_digest": report.content_digest.hex() if report.content_digest is not None else None,
            "aliases": list(report.aliases)}


def _count(shape) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _tied_names_clause(summary: dict) -> str:
    """How a summary's counts relate to the names decoding gives, when tied names were coded
    once (decode, info and verify count every name)."""
    aliases = summary["tensors_by_name"] - summary["tensors"]
    if not aliases:
        return ""
    return (f", as stored; with the {aliases} tied name{'s' if aliases > 1 else ''} coded once: "
            f"{summary['tensors_by_name']} tensors, {summary['parameters_by_name']:,} parameters")


def _print_summary(summary: dict) -> None:
    print(f"{_shown(summary['input'])} -> {_shown(summary['output'])}: {summary['original_bytes']:,} -> "
          f"{summary['compressed_bytes']:,} bytes, ratio {summary['compression_ratio']:.2f}x, "
          f"{summary['bits_per_parameter']:.3f} bits/parameter ({summary['tensors']} tensors, "
          f"{summary['parameters']:,} parameters" + _tied_names_clause(summary) + ")")
    for mode, kind in summary["by_mode"].items():
        error = f", max abs error {kind['max_abs_error']:.3g}" if mode != "raw" else ", lossless"
        print(f"  {mode:<8} {kind['tensors']:>5} tensors  {kind['original_bytes']:>14,} -> "
              f"{kind['coded_bytes']:>12,} bytes{error}")
    if summary.get("attached_files"):  # their bytes are in the stream's size, so in the ratio
        print(f"  attached {len(summary['attached_files']):>5} files  {summary['attached_bytes']:>14,} bytes "
              "(the folder's config and tokenizer files; counted in the size and ratio above)")
    blocks = summary["blocks"]
    if blocks["pruned"] or blocks["unified"]:  # matrices without structure are coded DENSE, with no block grid
        print(f"  blocks: {blocks['pruned']:,} pruned, {blocks['unified']:,} unified, {blocks['dense']:,} dense "
              f"(in the {summary['by_mode']['unified']['tensors']} UNIFIED tensors)")
    if summary.get("model_digest"):
        print(f"  model digest (SHA-256): {summary['model_digest']}")
    for note in summary["notes"]:
        print(f"  note: {_shown(note)}")


def _shown(text: str) -> str:
    """Text from a stream or weight file as printed: control characters (terminal escapes,
    newlines that would fake output lines) are shown escaped instead of being sent."""
    return text if text.isprintable() else repr(text)[1:-1]


def _standard(which: str):
    """``sys.stdin`` or ``sys.stdout`` (``which``: "input" or "output"), refusing one the shell
    closed (``>&-``: Python then has None in its place)."""
    stream = sys.stdin if which == "input" else sys.stdout
    if stream is None:
        raise UsageError(f"standard {which} is closed: give a file instead of -")
    return stream


def _stdout_apart_from(source: str) -> None:
    """Refuse a standard output that is closed, or that is the input file itself (``- 1<>
    in.safetensors``, ``>> in.nnu``), which writing would destroy as it is read (as cat
    refuses "input file is output file")."""
    stdout = _standard("output")
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if source != "-" and os.path.isfile(source) and os.path.samestat(os.fstat(stdout.fileno()), os.stat(source)):
            raise UsageError(f"standard output is the input file {source}: give the output its own file")


def _read_stream(path: str) -> bytes | FileMapping:
    """The stream at ``path`` (``-``: stdin), mapped when large (:func:`read_stream`)."""
    if path == "-":  # a pipe: its file header is checked first, so that what is not a stream
        stdin = _standard("input").buffer  # (/dev/zero, which never ends) is refused at once
        head = stdin.read(FILE_HEADER_SIZE)
        if len(head) == FILE_HEADER_SIZE:  # a shorter one is the decoder's to report (truncated)
            read_file_header(ByteReader(head))
        return head + stdin.read()
    if not os.path.exists(path):
        raise input_missing(path)
    if not os.path.isfile(path):
        raise IsADirectoryError(f"{path}: not a regular file")
    return read_stream(path)


def _decode(args: argparse.Namespace) -> int:
    if args.output == "-":
        _stdout_apart_from(args.input)
    if args.output == "-" and _standard("output").isatty():  # as gzip and zstd refuse
        raise UsageError("refusing to write a binary safetensors file to a terminal: redirect it, or give a file")
    if args.output != "-" and _same_file(args.input, args.output):
        raise UsageError("input and output are the same file")
    if args.output != "-" and not is_folder_target(args.output):
        try:
            checkpoint_format(args.output)
        except CheckpointError as exc:  # a wrong name on the command line, not a bad input file
            raise UsageError(str(exc)) from None
    if args.output != "-" and os.path.exists(args.output) and not args.force and not is_folder_target(args.output):
        raise OutputExistsError(args.output)
    limits = _output_limits(args)
    data, progress = _read_stream(args.input), _progress_printer(args, "decoding")
    # the tensor count is not known before a pass over the stream: assume enough of them
    workers = _workers_for(len(data), MAX_AUTO_WORKERS) if args.workers == "auto" else args.workers
    if args.output == "-":  # safetensors on stdout, written as decoded; the summary goes to stderr
        count, parameters = decode_to_safetensors_file(data, sys.stdout.buffer, limits=limits, progress=progress,
                                                       verify=not args.no_verify, workers=workers)
        sys.stdout.buffer.flush()
        with contextlib.redirect_stdout(sys.stderr):
            _print_decoded(args, count, parameters, 0)
        return EXIT_OK
    written = decode_into(data, args.output, limits=limits, progress=progress, overwrite=args.force,
                          verify=not args.no_verify, workers=workers, max_shard_bytes=args.max_shard_size,
                          source=None if args.input == "-" else args.input)
    left_out = written.attached_left_out
    _print_decoded(args, written.tensor_count, written.parameter_count, written.attached_written, len(left_out))
    if not args.json:
        for note in written.notes:
            print(f"  note: {note}", file=sys.stderr)
    if left_out and not args.json:
        print(f"  note: the stream also carries {len(left_out)} attached file(s) ({', '.join(_shown(f) for f in left_out[:3])}"
              f"{', ...' if len(left_out) > 3 else ''}), which a weight file has no place for: decode into a folder "
              "(a path ending in /) to get them", file=sys.stderr)
    return EXIT_OK


def _output_limits(args: argparse.Namespace) -> Limits | None:
    """The decoder limits of --max-output-bytes (None: the defaults)."""
    if args.max_output_bytes is None:
        return None
    if args.max_output_bytes < 1:
        raise UsageError(f"--max-output-bytes must be positive, got {args.max_output_bytes}")
    return Limits(max_total_output_bytes=args.max_output_bytes)


def _verify(args: argparse.Namespace) -> int:
    from .codec.bitio import ByteReader
    from .codec.decoder import iter_decoded
    from .codec.syntax import read_file_header

    expected = None
    if args.model_digest is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", args.model_digest.strip()):
            raise UsageError(f"--model-digest must be 64 hexadecimal digits, got {args.model_digest!r}")
        expected = args.model_digest.strip().lower()
    limits = _output_limits(args)
    data = _read_stream(args.input)
    header = read_file_header(ByteReader(data))  # iter_decoded checks it, and everything else, again
    parameters, records = 0, []
    for tensor in iter_decoded(data, limits=limits, progress=_progress_printer(args, "verifying")):
        parameters += tensor.array.size  # each tensor is let go: memory holds the stream and one tensor
        records.append((tensor.name, tensor.dtype, tensor.array.shape, tensor.content_digest))
    count = len(records)
    digest = _model_digest_hex(records) if header.version_major >= 4 else None
    result = {"input": args.input, "format": f"{header.version_major}.{header.version_minor}", "valid": True,
              "tensors": count, "parameters": parameters, "digests_verified": digest is not None,
              "model_digest": digest}
    mismatch = expected is not None and digest != expected
    if mismatch:
        result["expected_model_digest"] = expected
    if args.json:
        print(json.dumps(result))
    elif not args.quiet and not mismatch:
        if digest is not None:
            proof = "every tensor matches its content digest"
        else:
            proof = (f"format {result['format']} carries no digests: structure and CRCs checked, the decoded "
                     "values cannot be proven")
        print(f"{_shown(args.input)}: OK, format {result['format']}, {count} tensors, {parameters:,} parameters; "
              f"{proof}")
        if digest is not None:
            print(f"  model digest (SHA-256): {digest}")
    if mismatch:
        return _fail(f"{args.input}: holds model {digest or '(no digest: format < 4.0)'}, expected {expected}",
                     EXIT_FAILURES)
    return EXIT_OK


def _print_decoded(args: argparse.Namespace, count: int, parameters: int, files: int, left_out: int = 0) -> None:
    if args.json:
        print(json.dumps({"input": args.input, "output": args.output, "tensors": count, "parameters": parameters,
                          "attached_files": files, "attached_files_not_written": left_out}))
    else:
        attached = f", {files} attached files" if files else ""
        print(f"{_shown(args.input)} -> {_shown(args.output)}: {count} tensors, {parameters:,} parameters{attached}")


def _info(args: argparse.Namespace) -> int:
    data = _read_stream(args.input)
    files: list = []
    header, tensors = describe(data, with_blocks=True, files=files)
    attached = [{"path": f.path, "bytes": len(f.content)} for f in files]
    rows = [{"name": t.name, "dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
             "mode": t.coding_mode.name.lower(), "qp": t.qp,
             "step": float(step_size(t.qp, t.qp_density)) if t.qp is not None else None,
             "block": list(t.block) if t.block else None, "dependent": t.dependent,
             "payload_bytes": t.payload_bytes,
             "bits_per_parameter": 8 * t.payload_bytes / _count(t.shape) if _count(t.shape) else None,
             "blocks": dict(zip(("pruned", "unified", "dense"), t.block_counts, strict=True))
             if t.block_counts else None,
             "content_digest": t.content_digest.hex() if t.content_digest is not None else None,
             "alias_of": t.alias_of} for t in tensors]
    digest = _model_digest_hex([(t.name, t.dtype, t.shape, t.content_digest) for t in tensors]) \
        if header.version_major >= 4 else None
    layout = stream_layout(data) if args.bytes else None
    if args.json:
        summary = {"version": f"{header.version_major}.{header.version_minor}", "bytes": len(data),
                   "model_digest": digest, "tensors": rows, "attached_files": attached}
        if layout is not None:
            summary["layout"] = {"bytes": layout.bytes,
                                 "tensors": [{"name": t.name, "bytes": t.bytes} for t in layout.tensors]}
        print(json.dumps(summary))
        return EXIT_OK
    print(f"{_shown(args.input)}: nncodec_unify stream, format {header.version_major}.{header.version_minor}, "
          f"{len(data):,} bytes, {len(tensors)} tensors")
    table = [("name", "dtype", "shape", "coding", "bytes", "bits/param", "pruned/unified/dense")]
    for row in rows:
        coding = row["mode"]
        if row["alias_of"] is not None:  # tied weights (format 5.0): coded once, under the first name
            coding = f"alias of {_shown(row['alias_of'])}"
        elif row["qp"] is not None:
            coding += f" qp={row['qp']}"
        if row["block"] and row["alias_of"] is None:
            coding += f" {row['block'][0]}x{row['block'][1]}"
        if row["dependent"] and row["alias_of"] is None:
            coding += " dq"
        bits = f"{row['bits_per_parameter']:.3f}" if row["bits_per_parameter"] is not None else "-"
        blocks = "/".join(f"{v:,}" for v in row["blocks"].values()) if row["blocks"] else "-"
        table.append((_shown(row["name"]), row["dtype"], "x".join(map(str, row["shape"])) or "()", coding,
                      f"{row['payload_bytes']:,}", bits, blocks))
    widths = [max(len(line[k]) for line in table) for k in range(len(table[0]))]
    for line in table:
        cells = [cell.ljust(width) if k < 4 else cell.rjust(width) for k, (cell, width)
                 in enumerate(zip(line, widths, strict=True))]
        print("  " + "  ".join(cells).rstrip())
    if digest is not None:
        print(f"  model digest (SHA-256): {digest} (as stored; `nncodec verify` checks the tensors)")
    for item in attached:
        print(f"  attached file: {_shown(item['path'])} ({item['bytes']:,} bytes; decoding into a folder writes it)")
    if layout is not None:
        _print_layout(layout)
    return EXIT_OK


def _print_layout(layout) -> None:
    """``info --bytes``: the stream's bytes by category, then the overhead that codes no value."""
    print("  where the bytes go (the stream decoded and verified):")
    width = max(len(category) for category in layout.bytes)
    for category, count in layout.bytes.items():
        print(f"    {category:<{width}}  {count:>12,}  {100 * count / layout.total:5.1f} %")
    overhead = sum(layout.bytes.get(category, 0) for category in OVERHEAD_CATEGORIES)
    print(f"    overhead ({', '.join(OVERHEAD_CATEGORIES)}): {overhead:,} bytes "
          f"({100 * overhead / layout.total:.1f} %); per tensor with --json")


def _conform(args: argparse.Namespace) -> int:
    from .codec.conform import main as conform_main

    progress = _progress_printer(args, "conform", unit="stream")
    return EXIT_FAILURES if conform_main([args.directory], progress=progress) else EXIT_OK


if __name__ == "__main__":  # python -m nncodec_unify.cli, as python -m nncodec_unify
    sys.exit(main())
