"""The preflight (benchmark/preflight.py): every input a run can check without training is checked before
init_start; a bad one stops the run with exit status 2, naming it, and creates no log file.

Real WAV files are written with the stdlib `wave` module (wrong rate, stereo, too short, truncated, not a
WAV) beside the tiny espeak-ng corpus; the real training entry point is run where the exit status and the
log file matter.
"""
import csv
import math
from pathlib import Path
import shutil
import subprocess
import sys
import wave

import pytest

from benchmark.config import ConfigError, TrainConfig, parse_config
from benchmark.data.manifest import ManifestError, read_manifest
from benchmark.plan import make_plan
from benchmark.preflight import PreflightError, check_run, wav_problem
from test_train_e2e import SMALL_MODEL, read_log

ROOT = Path(__file__).resolve().parent.parent


def write_wav(path, samples=1600, rate=16000, channels=1, width=2):
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(b"\x01\x00" * (samples * channels * width // 2))
    return path


def manifest(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["wav_filename", "wav_filesize", "transcript"])
        writer.writerows(rows)
    return path


@pytest.fixture
def corpus(tiny_corpus, tmp_path):
    """A copy of the tiny corpus that a test may spoil."""
    folder = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, folder)
    return folder


def config(corpus, train="train.csv", **flags):
    return TrainConfig(train_data_dir=str(corpus / train), eval_data_dir=str(corpus / "dev.csv"), **flags)


def rows_of(corpus, name="train.csv"):
    with open(corpus / name, newline="") as f:
        return list(csv.reader(f))[1:]


def bad_cases(folder):
    """(description, extra manifest row, expected message part) for every kind of bad row."""
    good = folder / "utt0.wav"
    size = good.stat().st_size
    cases = [
        ("missing", ["gone.wav", 5000, "A B"], "gone.wav: no such file"),
        ("8 kHz", [write_wav(folder / "r8k.wav", rate=8000).name, 3244, "A"], "8000 Hz, 1 channel(s), 16-bit PCM"),
        ("stereo", [write_wav(folder / "st.wav", channels=2).name, 6444, "A"], "16000 Hz, 2 channel(s)"),
        ("8-bit", [write_wav(folder / "b8.wav", width=1).name, 1644, "A"], "8-bit PCM"),
        # 10 ms (160 samples), as the LibriSpeech converter used to keep: no 320-sample window
        ("10 ms", [write_wav(folder / "short.wav", samples=160).name, 364, "A"], "160 samples: shorter than one"),
        ("wrong size", ["utt0.wav", size + 32000, "THE CAT"], f"wav_filesize {size + 32000} but the file has {size}"),
        ("characters", ["utt1.wav", (folder / "utt1.wav").stat().st_size, "HÉLLO 42"],
         "outside the alphabet A-Z, apostrophe, space: '24É'"),
    ]
    (folder / "text.wav").write_text("not audio at all\n")
    cases.append(("not a WAV", ["text.wav", 17, "A"], "not a WAV file"))
    truncated = folder / "cut.wav"
    truncated.write_bytes(good.read_bytes()[:2000])
    cases.append(("truncated", ["cut.wav", 2000, "A"], "truncated: the header announces"))
    return cases


def test_each_bad_row_is_an_error_naming_manifest_line_and_wav(corpus):
    """Before: each of these rows trained until its batch came up (a traceback mid-epoch, run_stop aborted),
    or, for a wrong wav_filesize, silently moved the utterance in SortaGrad order and --max_duration."""
    good_rows = rows_of(corpus)
    for what, row, expected in bad_cases(corpus):
        path = manifest(corpus / f"bad_{what.replace(' ', '_')}.csv", good_rows[:3] + [row] + good_rows[3:])
        with pytest.raises(PreflightError) as raised:
            check_run(config(corpus, path.name))
        message = str(raised.value)
        assert message.startswith(f"{path}:5: {corpus / row[0]}: "), (what, message)
        assert expected in message, (what, message)
        assert "--skip_bad_utterances true" in message


def test_the_good_corpus_passes_and_headers_with_extra_chunks_are_read(corpus):
    checked = check_run(config(corpus))
    assert len(checked.train) == 16 and len(checked.eval) == 6 and checked.skipped == {}
    # A LIST chunk before `data` (as some tools write): found by walking the chunks, not at byte 36.
    plain = (corpus / "utt0.wav").read_bytes()
    listed = plain[:36] + b"LIST" + (10).to_bytes(4, "little") + b"INFOabcdef" + plain[36:]
    listed = listed[:4] + (len(listed) - 8).to_bytes(4, "little") + listed[8:]
    (corpus / "listed.wav").write_bytes(listed)
    assert wav_problem(corpus / "listed.wav", len(listed)) is None
    assert "wav_filesize" in wav_problem(corpus / "listed.wav", len(plain))


def test_skip_bad_utterances_drops_and_counts_the_bad_rows(corpus, capsys):
    cases = bad_cases(corpus)
    manifest(corpus / "mixed.csv", rows_of(corpus) + [row for _, row, _ in cases])
    checked = check_run(config(corpus, "mixed.csv", skip_bad_utterances=True))
    assert len(checked.train) == 16 and checked.skipped == {"train": len(cases), "eval": 0}
    err = capsys.readouterr()
    assert err.err.count("preflight: skipping ") == len(cases)
    assert f"skipped {len(cases)} bad train row(s) of {16 + len(cases)}" in err.out


def test_an_evaluation_set_without_words_and_a_max_duration_that_keeps_nothing_are_errors(corpus):
    """Before: WER NaN at every epoch until --max_epochs; --max_duration's empty set failed on the batch size."""
    size = (corpus / "utt0.wav").stat().st_size
    manifest(corpus / "dev.csv", [["utt0.wav", size, ""], ["utt1.wav", (corpus / "utt1.wav").stat().st_size, " "]])
    with pytest.raises(PreflightError, match="2 utterance\\(s\\) but no word in their transcripts"):
        check_run(config(corpus))
    manifest(corpus / "dev.csv", [["utt0.wav", size, "THE CAT SAT ON THE MAT"]])
    with pytest.raises(PreflightError, match="--max_duration 0.5: keeps none of the 16 training utterances"):
        check_run(config(corpus, max_duration=0.5))


def test_a_non_utf8_manifest_byte_names_file_and_line(corpus):
    """Before: a bare UnicodeDecodeError ('utf-8' codec can't decode byte 0xe9 in position 612)."""
    text = (corpus / "train.csv").read_bytes().split(b"\n")
    text[3] = text[3] + b"\xe9"
    (corpus / "latin1.csv").write_bytes(b"\n".join(text))
    with pytest.raises(ManifestError, match=r"latin1.csv:4: byte b'\\xe9' is not UTF-8"):
        read_manifest(corpus / "latin1.csv")


def test_manifest_rows_know_their_line_even_after_a_multiline_transcript(corpus):
    size = (corpus / "utt0.wav").stat().st_size
    manifest(corpus / "multi.csv", [["utt0.wav", size, "TWO\nLINES"], ["utt1.wav", 1, "A"]])
    assert [u.line for u in read_manifest(corpus / "multi.csv")] == [2, 4]


@pytest.mark.parametrize("flag", ["weight_decay", "learning_rate", "momentum", "grad_clip_norm", "max_duration",
                                  "warmup_fraction", "target_wer"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_every_float_flag_must_be_finite(flag, value):
    """Before: `--weight_decay nan` passed validation (nan < 0 is False) and failed in the optimizer."""
    with pytest.raises(SystemExit) as raised:
        parse_config(["--train_data_dir", "t.csv", "--eval_data_dir", "d.csv", f"--{flag}", value])
    assert raised.value.code == 2
    with pytest.raises(ValueError, match=f"--{flag}: must be a finite number"):
        TrainConfig(train_data_dir="t", eval_data_dir="d", **{flag: math.nan}).validate()


def test_gpus_asked_for_on_a_machine_without_them_is_a_config_error():
    """Before: `--num_gpus 4` on a CPU-only machine trained on the CPU without a word."""
    import torch
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"--num_gpus {count + 1}: torch sees {count} CUDA device"):
        make_plan(TrainConfig(train_data_dir="t", eval_data_dir="d", num_gpus=count + 1))


def train(corpus, tmp_path, train_csv="train.csv", *extra):
    log_file = tmp_path / "logs" / "result_1.txt"
    cmd = [sys.executable, "-m", "benchmark.train", "--train_data_dir", str(corpus / train_csv),
           "--eval_data_dir", str(corpus / "dev.csv"), "--log_file", str(log_file), "--max_epochs", "1",
           "--target_wer", "0.01", *SMALL_MODEL, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT), log_file


def test_a_bad_row_exits_2_before_any_log_and_skipping_logs_the_count_in_a_compliant_log(corpus, tmp_path):
    rows = rows_of(corpus)
    manifest(corpus / "bad.csv", rows + [["gone.wav", 5000, "A B"]])
    done, log_file = train(corpus, tmp_path, "bad.csv")
    assert done.returncode == 2 and f"bad.csv:18: {corpus / 'gone.wav'}: no such file" in done.stderr
    assert not log_file.exists() and not log_file.parent.exists()   # no result number used up
    for extra in (["--data_backend", "dali_gpu"], ["--num_gpus", "4"], ["--weight_decay", "nan"]):
        done, _ = train(corpus, tmp_path, "train.csv", *extra)
        assert done.returncode == 2 and not log_file.exists(), (extra, done.stderr)
    checked, _ = train(corpus, tmp_path, "bad.csv", "--check_only", "true")
    assert checked.returncode == 2 and not log_file.exists()
    checked, _ = train(corpus, tmp_path, "bad.csv", "--check_only", "true", "--skip_bad_utterances", "true")
    assert checked.returncode == 0 and '"train_utterances": 16' in checked.stdout and not log_file.exists()

    done, log_file = train(corpus, tmp_path, "bad.csv", "--skip_bad_utterances", "true")
    assert done.returncode == 3, done.stderr   # one epoch, target out of reach: aborted
    [skipped] = [e for e in read_log(log_file) if e["key"] == "skipped_utterances"]
    assert skipped["value"] == 1 and skipped["metadata"]["train"] == 1 and skipped["metadata"]["eval"] == 0
    assert [e["value"] for e in read_log(log_file) if e["key"] == "train_samples"] == [16]
    compliance = subprocess.run([sys.executable, "-m", "benchmark.results.compliance", str(log_file)], cwd=ROOT,
                                capture_output=True, text=True)
    assert compliance.returncode == 0 and "PASS" in compliance.stdout, compliance.stdout + compliance.stderr


def test_the_speed_script_times_the_preflight_on_a_generated_manifest():
    done = subprocess.run([sys.executable, "measure/preflight_speed.py", "--rows", "1500"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "built 1500 rows" in done.stdout and "preflight check_run: " in done.stdout
    assert '"train_utterances": 1500' in done.stdout and "--check_only true: " in done.stdout
