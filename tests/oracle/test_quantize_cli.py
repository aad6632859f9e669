"""tessera-quantize's command-line contract, whatever the format: a bad
request gets one clear line and a non-zero exit before any work, and the
output appears only when it is complete (an error or Ctrl-C leaves neither the
output nor its staging file behind)."""
import os
import signal
import subprocess
import time

import pytest

import checkpoints as ck

QUANTIZE = os.path.join(ck.BIN, "tessera-quantize")


def run(*args, timeout=120):
    return subprocess.run([QUANTIZE, *args], capture_output=True, text=True, timeout=timeout)


def leftovers(directory):
    return sorted(f for f in os.listdir(directory) if f.startswith("."))


@pytest.fixture(scope="module")
def dense():
    return ck.bundled_hf("f16")


def one_error_line(p):
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode != 0
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("tessera-quantize: "), p.stderr
    return lines[0]


def test_unknown_format(tmp_path, dense):
    line = one_error_line(run("--input", dense, "--output", str(tmp_path / "x"), "--format", "fp4"))
    assert "unknown --format 'fp4'" in line and "gguf:TYPE" in line
    assert os.listdir(tmp_path) == []


def test_unknown_gguf_type_names_the_valid_ones(tmp_path, dense):
    line = one_error_line(run("--input", dense, "--output", str(tmp_path / "x.gguf"), "--format", "gguf:Q9_9"))
    assert "Q9_9" in line and "Q4_K_M" in line
    assert os.listdir(tmp_path) == []


def test_output_in_a_missing_directory(tmp_path, dense):
    line = one_error_line(run("--input", dense, "--output", str(tmp_path / "nope" / "x.gguf"), "--format", "gguf:Q8_0"))
    assert "does not exist" in line and "nope" in line


def test_existing_output_needs_force(tmp_path, dense):
    out = tmp_path / "x.gguf"
    out.write_bytes(b"keep me")
    line = one_error_line(run("--input", dense, "--output", str(out), "--format", "gguf:Q8_0"))
    assert "--force" in line
    assert out.read_bytes() == b"keep me"


def test_already_quantized_input_is_refused(tmp_path):
    line = one_error_line(run("--input", ck.MODEL, "--output", str(tmp_path / "x.gguf"), "--format", "gguf:Q8_0"))
    assert "already quantized" in line and "Q4_1" in line
    assert os.listdir(tmp_path) == []


def test_missing_input(tmp_path):
    line = one_error_line(run("--input", str(tmp_path / "none"), "--output", str(tmp_path / "x.gguf"),
                              "--format", "gguf:Q8_0"))
    assert "no such file" in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("content,why", [(b"", "empty"), (b"\x00\x01\x02binary\xff\xfe" * 100, "binary"),
                                         (b" \n\t\n", "whitespace")])
@pytest.mark.parametrize("fmt", ["awq", "gptq"])
def test_unusable_calibration_text(tmp_path, dense, content, why, fmt):
    calib = tmp_path / "calib.txt"
    calib.write_bytes(content)
    out = tmp_path / "out"
    # Group 64: AutoAWQ's layout needs groups that divide SmolLM2's 576 columns.
    line = one_error_line(run("--input", dense, "--output", str(out), "--format", fmt, "--calibration", str(calib),
                              "--group-size", "64"))
    assert "--calibration" in line and why in line, line
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["gguf:Q4_K_M", "gptq"])
def test_interrupt_leaves_nothing(tmp_path, dense, fmt):
    """Ctrl-C in the middle of a run: exit 130, no output, no staging file."""
    out = tmp_path / ("model.gguf" if fmt.startswith("gguf:") else "model")
    args = [QUANTIZE, "--input", dense, "--output", str(out), "--format", fmt, "--threads", "1"]
    if fmt == "gptq":
        args += ["--calibration", os.path.join(ck.SOURCE, "data", "corpus", "c4.utf8"),
                 "--calibration-samples", "8", "--seq-len", "128"]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    # Wait for the first progress line, so the interrupt lands mid-run.
    first = p.stderr.readline()
    assert first, "tessera-quantize printed no progress"
    time.sleep(0.5)
    assert p.poll() is None, "the run ended before it could be interrupted"
    assert leftovers(tmp_path), "no staging file while running"
    p.send_signal(signal.SIGINT)
    rest = p.stderr.read()
    assert p.wait(timeout=60) == 130, rest
    assert "interrupted" in rest
    assert not out.exists()
    assert leftovers(tmp_path) == []
