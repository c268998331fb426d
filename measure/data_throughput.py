"""Data preparation throughput on this machine: espeak-ng synthesis and sox FLAC->WAV conversion.

Usage:
    nice -n 10 python measure/data_throughput.py [--hours 0.2] [--jobs N] [--seed 1]

Synthesizes about --hours of the synthetic corpus (train subset only, the same code as
`python -m benchmark.prepare.synthetic`) into a temporary folder, then converts it with the shared converter
(the same code as `python -m benchmark.prepare.librispeech` uses on LibriSpeech FLACs). Prints audio-hours
made per wall-clock minute for each step, and what that means for the default 12 h + 2 x 0.5 h corpus and
for LibriSpeech's 960 h of training audio. Both steps use --jobs processes; on a shared machine the
figures depend on what else runs.
"""
import argparse
import os
from pathlib import Path
import random
import sys
import tempfile
import time

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.prepare import prose, synthetic  # noqa: E402
from benchmark.prepare.convert import prepare_subset  # noqa: E402

DEFAULT_CORPUS_HOURS = 12 + 2 * 0.5
LIBRISPEECH_TRAIN_HOURS = 960.9


def measure(hours, jobs, seed, work_dir):
    """(synthesis audio-h/min, conversion audio-h/min, audio hours, utterances)."""
    speakers = synthetic.make_speakers(40, random.Random(seed))
    plan = synthetic.plan_corpus(prose.load_sentences(), speakers, seed, hours, eval_hours=0.001)
    plan = {"train": plan["train"], "dev": [], "test": []}
    made, synth_wall = synthetic.synthesize_all(plan, work_dir, jobs)
    synthetic.write_transcripts(plan, work_dir)
    start = time.perf_counter()
    summary = prepare_subset(work_dir / "train", work_dir / "wav" / "train", work_dir / "train.csv", jobs=jobs,
                             desc="convert", report=lambda *_: None)
    convert_wall = time.perf_counter() - start
    return made / 3600 / (synth_wall / 60), summary.hours / (convert_wall / 60), summary.hours, len(summary.utterances)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--hours", type=float, default=0.2, help="hours of audio to synthesize and convert")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel processes for both steps")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (which sentences and voices)")
    args = parser.parse_args(argv)
    if args.hours <= 0 or args.jobs <= 0:
        parser.error("--hours and --jobs must be positive")
    with tempfile.TemporaryDirectory(prefix="data_throughput.") as work_dir:
        synth, convert, hours, utterances = measure(args.hours, args.jobs, args.seed, Path(work_dir))
    print(f"machine: {os.cpu_count()} cores, --jobs {args.jobs}; sample: {hours:.3f} h, {utterances} utterances")
    print(f"synthesis  (espeak-ng -> sox -> FLAC): {synth:7.3f} audio-hours per minute")
    print(f"conversion (sox FLAC -> 16 kHz WAV):   {convert:7.3f} audio-hours per minute")
    default_minutes = DEFAULT_CORPUS_HOURS / synth + DEFAULT_CORPUS_HOURS / convert
    print(f"default synthetic corpus ({DEFAULT_CORPUS_HOURS:g} h): about {default_minutes:.1f} min "
          "(plus about 10 s to read the text and fingerprint)")
    print(f"LibriSpeech 960 h conversion: about {LIBRISPEECH_TRAIN_HOURS / convert:.0f} min (download and "
          "extraction not included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
