"""The nncodec command, called through main(argv) (issue 2, item 6)."""

from __future__ import annotations

import copy
import errno
import io
import json
import pickle

import numpy as np
import pytest

import nncodec_unify as nu
from nncodec_unify.cli import EXIT_LIMIT, EXIT_BAD_INPUT, EXIT_EXISTS, EXIT_IO, EXIT_OK, EXIT_USAGE, main

torch = pytest.importorskip("torch")


@pytest.fixture()
def state_dict():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 10))
    state = model.state_dict()
    state["extra.bf16"] = torch.randn(4, 4).bfloat16()
    state["extra.steps"] = torch.tensor(7)
    return state


def test_encode_decode_pt_round_trip_restores_names_shapes_and_dtypes(tmp_path, state_dict, capsys):
    source, stream, target = tmp_path / "m.pt", tmp_path / "m.nnu", tmp_path / "back.pt"
    torch.save(state_dict, source)
    assert main(["encode", str(source), str(stream), "--no-rdo"]) == EXIT_OK  # nearest: half-step bound
    out = capsys.readouterr().out
    assert "->" in out and "ratio" in out and "bits/parameter" in out and "max abs error" in out
    assert main(["decode", str(stream), str(target)]) == EXIT_OK
    back = torch.load(target, weights_only=True)
    assert list(back) == list(state_dict)
    for name, tensor in state_dict.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
    assert torch.equal(back["extra.steps"], state_dict["extra.steps"])
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 10))
    model.load_state_dict({k: v for k, v in back.items() if not k.startswith("extra")})
    assert (model[0].weight - state_dict["0.weight"]).abs().max() <= 2.0**-9


def test_safetensors_in_and_out(tmp_path, state_dict):
    from safetensors.torch import load_file, save_file

    source, stream, target = tmp_path / "m.safetensors", tmp_path / "m.nnu", tmp_path / "o.safetensors"
    save_file({k: v.contiguous() for k, v in state_dict.items()}, source)
    assert main(["encode", str(source), str(stream), "--qp", "-40", "--block", "2x2", "--no-rdo"]) == EXIT_OK
    assert main(["decode", str(stream), str(target)]) == EXIT_OK
    back = load_file(target)
    assert back["extra.bf16"].dtype == torch.bfloat16
    assert (back["3.weight"] - state_dict["3.weight"]).abs().max() <= 2.0**-11


def test_info_json_lists_tensors(tmp_path, state_dict, capsys):
    torch.save(state_dict, tmp_path / "m.pt")
    main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "--mode", "*.bias=raw",
          "--mode", "0.weight=unified", "--tensor-qp", "3.*=-20", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["compressed_bytes"] == (tmp_path / "m.nnu").stat().st_size
    assert main(["info", str(tmp_path / "m.nnu"), "--json"]) == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    by_name = {t["name"]: t for t in info["tensors"]}
    assert info["version"] == "4.0"  # content digests and dependent quantization, the defaults
    assert info["model_digest"] == summary["model_digest"] and len(info["model_digest"]) == 64
    assert by_name["0.weight"]["dependent"] and not by_name["extra.steps"]["dependent"]
    assert by_name["0.bias"]["mode"] == "raw"
    assert by_name["3.weight"]["qp"] == -20 and by_name["0.weight"]["qp"] == -32
    assert by_name["0.weight"]["block"] == [4, 4] and by_name["0.weight"]["shape"] == [8, 3, 3, 3]
    # without a mode asked for, a matrix whose blocks all came out dense is coded DENSE (no block map)
    assert by_name["3.weight"]["mode"] == "dense" and by_name["3.weight"]["block"] is None


def test_existing_output_needs_force(tmp_path, state_dict, capsys):
    torch.save(state_dict, tmp_path / "m.pt")
    (tmp_path / "m.nnu").write_bytes(b"keep me")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu")]) == EXIT_EXISTS
    assert (tmp_path / "m.nnu").read_bytes() == b"keep me"
    assert "use -f" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "-f"]) == EXIT_OK
    assert nu.decode((tmp_path / "m.nnu").read_bytes())


def test_errors_are_one_line_with_distinct_codes_and_leave_no_file(tmp_path, capsys):
    assert main(["decode", str(tmp_path / "missing.nnu"), str(tmp_path / "o.pt")]) == EXIT_IO
    (tmp_path / "bad.nnu").write_bytes(b"\x89NNU\r\n\x1a\n\x02\x00\x00\x00\x01")
    assert main(["decode", str(tmp_path / "bad.nnu"), str(tmp_path / "o.pt")]) == EXIT_BAD_INPUT
    assert main(["encode", "a.pt", "b.nnu", "--block", "4by4"]) == EXIT_USAGE
    (tmp_path / "x.txt").write_text("weights?")
    assert main(["encode", str(tmp_path / "x.txt"), str(tmp_path / "o.nnu")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert all(line.startswith("nncodec: error: ") for line in err.strip().splitlines())
    assert len(err.strip().splitlines()) == 4 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nnu", "x.txt"]


def test_pickled_module_is_refused_with_a_fix(tmp_path, capsys):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    assert main(["encode", str(tmp_path / "module.pt"), str(tmp_path / "o.nnu")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "torch.save(model.state_dict()" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.nnu").exists()


def test_checkpoint_dict_holding_a_state_dict(tmp_path, state_dict):
    torch.save({"epoch": 3, "model_state_dict": state_dict, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pt")
    assert main(["encode", str(tmp_path / "ckpt.pt"), str(tmp_path / "o.nnu")]) == EXIT_OK
    assert set(nu.decode((tmp_path / "o.nnu").read_bytes())) == set(state_dict)


def test_same_input_and_output_is_refused(tmp_path, state_dict):
    torch.save(state_dict, tmp_path / "m.pt")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.pt"), "-f"]) == EXIT_USAGE
    assert torch.load(tmp_path / "m.pt", weights_only=True).keys() == state_dict.keys()


def test_encode_file_writes_unit_by_unit_and_never_holds_the_stream(tmp_path):
    """nu.encode_file returns the file's size and reports, not its bytes (read on access), takes
    progress and workers like the CLI, and writes the same stream whichever it is given."""
    import tracemalloc

    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    # many small tensors: a stream large against the work of coding any one of them
    save_file({f"layer{i}.weight": rng.normal(0, 0.05, (64, 96)).astype(np.float32) for i in range(400)},
              str(tmp_path / "m.safetensors"))
    save_file({f"w{i}": rng.normal(0, 0.05, (64, 96)).astype(np.float32) for i in range(2)},
              str(tmp_path / "small.safetensors"))
    nu.encode_file(tmp_path / "small.safetensors", tmp_path / "small.nnu")  # lazy imports (numpy.ma), once
    tracemalloc.start()
    try:
        calls = []
        result = nu.encode_file(tmp_path / "m.safetensors", tmp_path / "one.nnu",
                                progress=lambda done, total, name: calls.append((done, total, name)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = (tmp_path / "one.nnu").stat().st_size
    assert isinstance(result, nu.EncodedFile) and result.path == tmp_path / "one.nnu"
    assert result.stream_bytes == size > 1 << 20 and len(result.reports) == 400
    assert peak < 0.75 * size, (peak, size)  # it held the whole stream (read back) before
    assert calls == [(i, 400, report.name) for i, report in enumerate(result.reports)]
    assert result.data == (tmp_path / "one.nnu").read_bytes()
    assert all(report.max_abs_error > 0 for report in result.reports)
    two = nu.encode_file(tmp_path / "m.safetensors", tmp_path / "two.nnu", workers=2)
    assert (tmp_path / "two.nnu").read_bytes() == result.data and two.reports == result.reports


def test_file_helpers_round_trip_and_refuse_overwrite(tmp_path, state_dict):
    torch.save(state_dict, tmp_path / "m.pt")
    result = nu.encode_file(tmp_path / "m.pt", tmp_path / "m.nnu")
    assert (tmp_path / "m.nnu").read_bytes() == result.data
    # the library names its own argument, not the command line's -f
    with pytest.raises(nu.OutputExistsError, match=r"m\.nnu: already exists \(pass overwrite=True to replace it\)$"):
        nu.encode_file(tmp_path / "m.pt", tmp_path / "m.nnu")
    model = nu.decode_file(tmp_path / "m.nnu", tmp_path / "back.safetensors")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        nu.decode_to_file(tmp_path / "m.nnu", tmp_path / "back.safetensors")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x").write_text("x")
    with pytest.raises(nu.OutputExistsError, match="folder: folder exists and is not empty \\(pass overwrite=True"):
        nu.decode_to_file(tmp_path / "m.nnu", tmp_path / "folder")
    # it crosses process boundaries (pickle) and copies whole, as the other errors do
    error = nu.OutputExistsError(tmp_path / "x.nnu", "is in the way")
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(clone) is nu.OutputExistsError and str(clone) == str(error)
        assert (clone.filename, clone.detail, clone.errno) == (str(tmp_path / "x.nnu"), "is in the way", errno.EEXIST)
    assert [t.name for t in model.tensors] == list(state_dict)
    assert (tmp_path / "back.safetensors").stat().st_size > 0


def test_post_training_projection_prunes_and_unifies_and_reports_distortion(tmp_path, capsys):
    torch.manual_seed(1)
    state = {"a.weight": torch.randn(32, 64), "b.weight": torch.randn(16, 32).bfloat16(), "a.bias": torch.randn(32)}
    torch.save(state, tmp_path / "m.pt")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "--prune-ratio", "0.5",
                 "--unify-ratio", "0.25", "--block", "4x4", "--json"]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["projection"]
    blocks = summary["blocks"]
    total = 32 * 64 // 16 + 16 * 32 // 16
    assert blocks["pruned"] >= total // 2 and blocks["unified"] >= total // 4 - 1
    model = nu.decode_tensors((tmp_path / "m.nnu").read_bytes())
    assert {t.name: t.dtype.name for t in model.tensors}["b.weight"] == "BFLOAT16"
    plain = tmp_path / "plain.nnu"
    assert main(["encode", str(tmp_path / "m.pt"), str(plain)]) == EXIT_OK
    assert (tmp_path / "m.nnu").stat().st_size < 0.5 * plain.stat().st_size


@pytest.mark.parametrize("global_budget", [[], ["--global-budget"]])
def test_the_projection_uses_each_tensors_coding_block(tmp_path, capsys, global_budget):
    """--tensor-block: a tensor is projected in the blocks it is coded in (it was projected in
    --block's, and coded in its own, which kept almost none of its unified or pruned blocks)."""
    torch.manual_seed(2)
    torch.save({"l1.weight": torch.randn(32, 64), "l2.weight": torch.randn(32, 64)}, tmp_path / "m.pt")
    assert main(["encode", "-q", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "--prune-ratio", "0.5",
                 "--unify-ratio", "0.3", "--tensor-block", "l1.*=8x8", *global_budget]) == EXIT_OK
    model = nu.decode_tensors((tmp_path / "m.nnu").read_bytes())
    uniform, blocks = {}, {}
    for tensor in model.tensors:
        rows, cols = (8, 8) if tensor.name == "l1.weight" else (4, 4)
        values = tensor.array.reshape(32 // rows, rows, 64 // cols, cols).transpose(0, 2, 1, 3)
        magnitudes = np.abs(values.reshape(32 // rows, 64 // cols, -1))
        uniform[tensor.name] = int((magnitudes.max(-1) == magnitudes.min(-1)).sum())  # pruned or unified
        blocks[tensor.name] = magnitudes.shape[0] * magnitudes.shape[1]
    # 80 % of the coded blocks pruned or unified: in each tensor, or (a global budget counts
    # blocks, and the 8x8 ones cost more) over both
    if global_budget:
        assert sum(uniform.values()) >= 0.79 * sum(blocks.values()), uniform
    else:
        assert all(uniform[name] >= 0.79 * blocks[name] for name in blocks), uniform


def test_bad_projection_options_are_usage_errors(tmp_path, capsys):
    torch.save({"a.weight": torch.randn(8, 8)}, tmp_path / "m.pt")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "--prune-ratio", "0.8",
                 "--unify-ratio", "0.5"]) == EXIT_USAGE
    assert not (tmp_path / "m.nnu").exists()
    assert capsys.readouterr().err.count("\n") == 1


def test_demo_json_reports_the_decoded_model(capsys):
    pytest.importorskip("sklearn")
    assert main(["demo", "--json", "--epochs", "1"]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"dense_accuracy", "compressed_accuracy", "bitstream_bytes", "compression_ratio", "bit_exact"}
    assert result["bit_exact"] is True
    assert result["compression_ratio"] == pytest.approx(result["fp32_bytes"] / result["bitstream_bytes"])


def test_decode_can_refuse_large_outputs(tmp_path, capsys):
    (tmp_path / "m.nnu").write_bytes(nu.encode({"w": np.zeros((64, 64), np.float32)}))
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "o.safetensors"), "--max-output-bytes", "1000"]) \
        == EXIT_LIMIT  # a limit, not a malformed stream (issue 13)
    assert "exceed 1000 bytes" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "o.safetensors")]) == EXIT_OK


def test_info_table_shows_bits_and_block_kinds_and_encode_writes_a_report(tmp_path, capsys):
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 0.05, (16, 32)).astype(np.float32)
    weights[:8] = 0  # 16 pruned blocks
    torch.save({"w": torch.from_numpy(weights), "b": torch.zeros(3)}, tmp_path / "m.pt")
    report = tmp_path / "report.json"
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "--report", str(report)]) == EXIT_OK
    written = json.loads(report.read_text())
    by_name = {t["name"]: t for t in written["tensor_reports"]}
    assert by_name["w"]["blocks"]["pruned"] == 16 and by_name["w"]["rmse"] > 0
    assert written["compressed_bytes"] == (tmp_path / "m.nnu").stat().st_size
    capsys.readouterr()
    assert main(["info", str(tmp_path / "m.nnu")]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert "bits/param" in lines[1] and "pruned/unified/dense" in lines[1]
    row = next(line for line in lines if line.strip().startswith("w "))
    assert "16/0/16" in row
    assert main(["info", str(tmp_path / "m.nnu"), "--json"]) == EXIT_OK
    info = {t["name"]: t for t in json.loads(capsys.readouterr().out)["tensors"]}
    assert info["w"]["blocks"] == {"pruned": 16, "unified": 0, "dense": 16} and info["w"]["bits_per_parameter"] > 0


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("with_tqdm", [True, False])
def test_progress_on_a_terminal_and_none_when_quiet_or_json(tmp_path, monkeypatch, with_tqdm):
    import argparse
    import builtins
    import sys as system

    from nncodec_unify.cli import _progress_printer

    if with_tqdm:
        pytest.importorskip("tqdm")
    else:
        real_import = builtins.__import__

        def no_tqdm(name, *args, **kwargs):
            if name == "tqdm":
                raise ImportError("no tqdm")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_tqdm)
    terminal = _Terminal()
    monkeypatch.setattr(system, "stderr", terminal)
    report = _progress_printer(argparse.Namespace(quiet=False, json=False), "decoding")
    for done in range(3):
        report(done, 3, f"layer{done}.weight")
    # tqdm draws a bar it clears at the end (its refreshes are throttled); the fallback a counter
    assert "decoding" in terminal.getvalue() and ("/3" if with_tqdm else "[3/3]") in terminal.getvalue()
    assert _progress_printer(argparse.Namespace(quiet=True, json=False), "decoding") is None
    assert _progress_printer(argparse.Namespace(quiet=False, json=True), "decoding") is None
    monkeypatch.setattr(system, "stderr", io.StringIO())  # not a terminal
    assert _progress_printer(argparse.Namespace(quiet=False, json=False), "decoding") is None



def test_a_raw_rule_keeps_its_tensor_exact_under_projection(tmp_path, capsys):
    """Regression (issue 13): --mode 'fc.*=raw' with --unify-ratio used to project fc.weight anyway."""
    rng = np.random.default_rng(0)
    state = {"fc.weight": torch.from_numpy(rng.normal(size=(16, 40)).astype(np.float32)),
             "conv.weight": torch.from_numpy(rng.normal(size=(8, 4, 3, 3)).astype(np.float32)),
             "bf.weight": torch.from_numpy(rng.normal(size=(8, 8)).astype(np.float32)).bfloat16()}
    torch.save(state, tmp_path / "m.pt")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "--mode", "fc.*=raw",
                 "--unify-ratio", "0.3", "--prune-ratio", "0.2", "--json"]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in summary["projection"]["tensors"]] == ["conv.weight", "bf.weight"]
    decoded = nu.decode_tensors((tmp_path / "m.nnu").read_bytes())
    by_name = {t.name: t for t in decoded.tensors}
    assert by_name["fc.weight"].array.tobytes() == state["fc.weight"].numpy().tobytes()
    assert by_name["bf.weight"].dtype.name == "BFLOAT16"


def test_sigterm_and_a_closed_pipe(tmp_path):
    """Regression (issue 13): SIGTERM left a partial file; `| head` printed an error, exit 3."""
    import signal
    import subprocess
    import sys

    values = {f"t{i}": np.random.default_rng(i).normal(size=(512, 512)).astype(np.float32) for i in range(40)}
    from safetensors.numpy import save_file

    save_file(values, tmp_path / "m.safetensors")
    process = subprocess.Popen([sys.executable, "-m", "nncodec_unify", "encode", str(tmp_path / "m.safetensors"),
                                str(tmp_path / "m.nnu")], stderr=subprocess.PIPE, text=True)
    import time

    # the temporary output appears as the encode starts; coding 10 M weights takes seconds more
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".m.nnu.*.partial")):
        assert process.poll() is None and time.monotonic() < deadline, "the encode never started its output"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and "SIGTERM" in err and "no output" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    nu.encode_file(tmp_path / "m.safetensors", tmp_path / "m.nnu")
    piped = subprocess.run(f"{sys.executable} -m nncodec_unify info {tmp_path / 'm.nnu'} | head -1", shell=True,
                           capture_output=True, text=True, timeout=60)
    assert piped.stderr == "" and piped.stdout.startswith(str(tmp_path / "m.nnu"))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # that drop is the point
def test_a_sigterm_whose_exception_a_finalizer_dropped_still_leaves_no_output(tmp_path, monkeypatch, capsys):
    """Python only prints an exception raised while a __del__ runs; the signal is recorded too,
    so the encode stops at the next unit and no output is completed (the flaky CI failure of
    test_sigterm_and_a_closed_pipe: exit 0 and a written stream after SIGTERM)."""
    import signal

    from safetensors.numpy import save_file

    from nncodec_unify.codec import encoder, termination

    class SignalledWhileFinalized:
        def __del__(self):
            termination.on_signal(signal.SIGTERM, None)

    real_job = encoder._encode_job

    def job_during_which_the_signal_lands_in_a_finalizer(job):
        SignalledWhileFinalized()  # collected at once: its __del__ raises, Python drops it
        return real_job(job)

    monkeypatch.setattr(encoder, "_encode_job", job_during_which_the_signal_lands_in_a_finalizer)
    save_file({"a": np.ones((8, 8), np.float32), "b": np.zeros(4, np.float32)}, tmp_path / "m.safetensors")
    code = main(["encode", str(tmp_path / "m.safetensors"), str(tmp_path / "m.nnu"), "--workers", "1"])
    assert code == 128 + signal.SIGTERM
    assert "terminated by SIGTERM; no output was written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    monkeypatch.undo()  # the next command starts afresh
    assert main(["encode", str(tmp_path / "m.safetensors"), str(tmp_path / "m.nnu")]) == EXIT_OK


def test_checkpoints_keys_prefixes_and_what_was_left_out(tmp_path, capsys):
    weights = {"module.fc.weight": torch.randn(4, 4), "module.fc.bias": torch.randn(4)}
    torch.save({"model": weights, "ema": {"fc.weight": torch.ones(4, 4)}, "optimizer": {"lr": 0.1}, "epoch": 7},
               tmp_path / "ckpt.pt")
    assert main(["encode", str(tmp_path / "ckpt.pt"), str(tmp_path / "m.nnu"), "--strip-prefix", "module.",
                 "--mode", "nothing.*=raw", "--json"]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert {"left out checkpoint entry 'optimizer'", "left out checkpoint entry 'epoch'"} <= set(summary["notes"])
    assert any("--mode nothing.*" in note and "matches no tensor" in note for note in summary["notes"])
    assert sorted(nu.decode((tmp_path / "m.nnu").read_bytes())) == ["fc.bias", "fc.weight"]
    assert main(["encode", str(tmp_path / "ckpt.pt"), str(tmp_path / "e.nnu"), "--key", "ema"]) == EXIT_OK
    assert list(nu.decode((tmp_path / "e.nnu").read_bytes())) == ["fc.weight"]
    capsys.readouterr()
    assert main(["encode", str(tmp_path / "ckpt.pt"), str(tmp_path / "x.nnu"), "--key", "nope"]) == EXIT_BAD_INPUT
    assert "no entry 'nope'" in capsys.readouterr().err


def test_clear_messages_for_files_that_are_not_checkpoints_and_conflicting_options(tmp_path, capsys):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello, not a model")
    assert main(["encode", str(tmp_path / "empty.pt"), str(tmp_path / "a.nnu")]) == EXIT_BAD_INPUT
    assert "the file is empty" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "text.pt"), str(tmp_path / "a.nnu")]) == EXIT_BAD_INPUT
    assert "not a torch file" in capsys.readouterr().err
    torch.save({"w": torch.randn(8, 8)}, tmp_path / "m.pt")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "a.nnu"), "--unify-ratio", "0.2",
                 "--unify-threshold", "0.1"]) == 2
    assert "alternatives" in capsys.readouterr().err
    assert not (tmp_path / "a.nnu").exists()
    assert main([]) == 2 and "usage: nncodec" in capsys.readouterr().out


def test_npz_output_torch_decoding_and_a_stream_from_stdin(tmp_path):
    import subprocess
    import sys

    values = {"w": np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32),
              "h": np.arange(6, dtype=np.float16).reshape(2, 3)}
    data = nu.encode(values)
    (tmp_path / "m.nnu").write_bytes(data)
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "o.npz")]) == EXIT_OK
    with np.load(tmp_path / "o.npz") as loaded:
        assert loaded["h"].dtype == np.float16 and loaded["w"].shape == (8, 8)
        assert loaded["w"].tobytes() == nu.decode(data)["w"].tobytes()
    as_torch = nu.decode(data, framework="pt")
    assert as_torch["h"].dtype == torch.float16 and torch.equal(as_torch["w"], torch.from_numpy(nu.decode(data)["w"]))
    with pytest.raises(ValueError, match="framework"):
        nu.decode(data, framework="jax")
    piped = subprocess.run([sys.executable, "-m", "nncodec_unify", "decode", "-", str(tmp_path / "p.safetensors")],
                           input=data, capture_output=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    from nncodec_unify.codec.checkpoint import load_tensors

    assert load_tensors(tmp_path / "p.safetensors")["w"].tobytes() == nu.decode(data)["w"].tobytes()


def test_decode_json_and_every_positional_has_help(tmp_path, capsys):
    (tmp_path / "m.nnu").write_bytes(nu.encode({"w": np.ones((4, 4), np.float32)}))
    assert main(["decode", str(tmp_path / "m.nnu"), str(tmp_path / "o.safetensors"), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"input": str(tmp_path / "m.nnu"),
                                                  "output": str(tmp_path / "o.safetensors"), "tensors": 1,
                                                  "parameters": 16, "attached_files": 0,
                                                  "attached_files_not_written": 0}
    from nncodec_unify.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, (name, action.dest)
            assert "Limits()" not in action.help


def test_encode_to_stdout_writes_the_stream_and_the_summary_to_stderr(tmp_path):
    import subprocess
    import sys

    from safetensors.numpy import save_file

    save_file({"w": np.random.default_rng(1).normal(size=(32, 32)).astype(np.float32)}, tmp_path / "m.safetensors")
    piped = subprocess.run([sys.executable, "-m", "nncodec_unify", "encode", str(tmp_path / "m.safetensors"), "-"],
                           capture_output=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert main(["encode", str(tmp_path / "m.safetensors"), str(tmp_path / "m.nnu")]) == EXIT_OK
    assert piped.stdout == (tmp_path / "m.nnu").read_bytes()
    assert b"bits/parameter" in piped.stderr


def test_the_readme_names_every_command_line_option():
    from pathlib import Path

    from nncodec_unify.cli import build_parser

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name, command in commands.items():
        for action in command._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}" in readme or f"/{option}" in readme, (name, option)


def test_the_readme_lists_every_exit_code():
    from pathlib import Path

    import nncodec_unify.cli as cli

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("distinct exit codes"):].split("\n\n")[0]
    codes = {value for name, value in vars(cli).items() if name.startswith("EXIT_") and value not in (0, 1)}
    for code in codes | {130, 143, 129}:
        assert str(code) in paragraph, code


def test_decode_to_stdout_writes_safetensors(tmp_path):
    import subprocess
    import sys

    from nncodec_unify.codec.safetensors_io import read_safetensors

    data = nu.encode({"w": np.random.default_rng(2).normal(size=(8, 8)).astype(np.float32), "s": np.array(3)})
    (tmp_path / "m.nnu").write_bytes(data)
    piped = subprocess.run([sys.executable, "-m", "nncodec_unify", "decode", str(tmp_path / "m.nnu"), "-"],
                           capture_output=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    (tmp_path / "o.safetensors").write_bytes(piped.stdout)
    back = read_safetensors(tmp_path / "o.safetensors")
    assert back["w"].tobytes() == nu.decode(data)["w"].tobytes() and back["s"].shape == ()
    assert b"2 tensors" in piped.stderr


def test_workers_auto_uses_processes_only_for_large_inputs(tmp_path, capsys, monkeypatch):
    from safetensors.numpy import save_file

    import nncodec_unify.cli as cli

    rng = np.random.default_rng(3)
    save_file({"a": rng.normal(size=(64, 64)).astype(np.float32), "b": rng.normal(size=64).astype(np.float32)},
              tmp_path / "m.safetensors")
    out = tmp_path / "m.nnu"
    assert main(["encode", str(tmp_path / "m.safetensors"), str(out), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["workers"] == 1  # 16 KB: processes would not pay
    monkeypatch.setattr(cli, "AUTO_WORKERS_FROM", 1)
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    assert cli._auto_workers(str(tmp_path / "m.safetensors"), 2) == 2  # never more than the tensors
    assert cli._auto_workers(str(tmp_path / "m.safetensors"), 50) == cli.MAX_AUTO_WORKERS
    assert cli._auto_workers(str(tmp_path), 50) == cli.MAX_AUTO_WORKERS  # a model folder: its weight files
    assert main(["encode", str(tmp_path / "m.safetensors"), str(tmp_path / "w.nnu"), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["workers"] == 2
    assert (tmp_path / "w.nnu").read_bytes() == out.read_bytes()  # the same bytes with 2 processes
    for bad in ("0", "many"):
        assert main(["encode", str(tmp_path / "m.safetensors"), str(tmp_path / "x.nnu"), "--workers", bad]) == 2
        assert "--workers" in capsys.readouterr().err


def test_a_tensor_block_for_a_matrix_coded_dense_is_noted(tmp_path, capsys):
    """A block shape has no effect on a matrix without structured blocks (coded DENSE): the
    summary says so, and an explicit --mode keeps the block grid."""
    values = {"w": torch.from_numpy(np.random.default_rng(0).laplace(0, 0.05, (32, 32)).astype(np.float32))}
    torch.save(values, tmp_path / "m.pt")
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "--tensor-block", "w=8x8", "--json"]) == EXIT_OK
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any("w was coded DENSE, with no block grid" in note for note in notes)
    assert main(["encode", str(tmp_path / "m.pt"), str(tmp_path / "m.nnu"), "-f", "--tensor-block", "w=8x8",
                 "--mode", "w=unified", "--json"]) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert not any("no block grid" in note for note in summary["notes"]) and "unified" in summary["by_mode"]
