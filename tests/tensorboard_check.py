#!/usr/bin/env python3
"""The real TensorBoard reads densessm-train's event files: a short run on a tiny corpus, then every record
is read with TensorBoard's own record reader (which checks both CRCs) and parsed with its Event proto, and
TensorBoard's EventAccumulator (what the web UI uses) must show the scalars of metrics.jsonl at the same
steps. Exits 77 (CTest: skipped) where Python has no tensorboard package; tools/setup.sh installs it."""
import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys

try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
except ImportError as e:
    print(f"skipped: no tensorboard package ({e}); tools/setup.sh installs it")
    sys.exit(77)


def run(*command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stdout}\n{result.stderr}")


def sentence(i):
    subjects = ["the farmer", "a young child", "the old king", "my neighbour", "the river", "a quiet bird"]
    verbs = ["walked toward", "looked at", "remembered", "carried", "followed", "painted"]
    objects = ["the green hill", "a wooden boat", "the morning light", "seven stones", "the city gate"]
    return f"{subjects[i % 6]} {verbs[i // 6 % 6]} {objects[i // 36 % 5]}, then {subjects[i * 5 % 6]} rested ({i})."


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True, help="folder of densessm-tokenizer, -prepare-data, -train")
    parser.add_argument("--configs", required=True, help="the repository's configs/ folder")
    parser.add_argument("--work-dir", required=True)
    args = parser.parse_args()
    args.bin_dir, args.configs = os.path.abspath(args.bin_dir), os.path.abspath(args.configs)
    for tool in ("densessm-tokenizer", "densessm-prepare-data", "densessm-train"):
        if not os.access(f"{args.bin_dir}/{tool}", os.X_OK):  # a build of some targets only
            print(f"skipped: {args.bin_dir}/{tool} is not built")
            sys.exit(77)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir)
    work = args.work_dir
    with open(f"{work}/corpus.txt", "w") as corpus:
        corpus.writelines(sentence(i) + "\n" for i in range(2000))
    run(f"{args.bin_dir}/densessm-tokenizer", "train", "--input", f"{work}/corpus.txt", "--model-prefix",
        f"{work}/tok", "--vocab-size", "300", "--threads", "2")
    run(f"{args.bin_dir}/densessm-prepare-data", f"{work}/corpus.txt", "--tokenizer", f"{work}/tok.model",
        "--output", f"{work}/data", "--txt-documents", "line", "--validation-percent", "10", "--threads", "2")
    config = {"model": f"{args.configs}/tiny-dense-retnet.json", "data": f"{work}/data", "output_dir": f"{work}/run",
              "batch_size": 2, "gradient_accumulation": 1, "block_size": 16, "max_steps": 6, "log_every": 2,
              "eval_every": 3, "eval_batches": 2, "checkpoint_every": 0}
    with open(f"{work}/run.json", "w") as f:
        json.dump(config, f)
    run(f"{args.bin_dir}/densessm-train", "--config", f"{work}/run.json")

    files = glob.glob(f"{work}/run/tensorboard/events.out.tfevents.*")
    if len(files) != 1:
        sys.exit(f"expected one event file, found {files}")
    reader = pywrap_tensorflow.PyRecordReader_New(files[0])
    events = []
    while True:
        try:
            reader.GetNext()  # raises DataLossError on a bad CRC
        except errors.OutOfRangeError:
            break
        events.append(event_pb2.Event.FromString(reader.record()))
    if events[0].file_version != "brain.Event:2":
        sys.exit(f"first event is not the file version: {events[0]}")

    expected = {}  # tag -> {step: value}
    with open(f"{work}/run/metrics.jsonl") as f:
        for line in f:
            entry = json.loads(line)
            for key, value in entry.items():
                if key in ("step", "tokens") or value is None:
                    continue
                tag = "validation/" + key[len("validation_"):] if key.startswith("validation_") else "train/" + key
                expected.setdefault(tag, {})[entry["step"]] = value
    for tag in ["train/loss", "train/lr", "train/grad_norm", "train/tokens_per_second", "train/loss_scale",
                "train/skipped_steps", "validation/loss", "validation/perplexity"]:
        if tag not in expected:
            sys.exit(f"metrics.jsonl has no {tag}")

    accumulator = EventAccumulator(f"{work}/run/tensorboard")
    accumulator.Reload()
    for tag, points in expected.items():
        shown = {e.step: e.value for e in accumulator.Scalars(tag)}
        if sorted(shown) != sorted(points):
            sys.exit(f"{tag}: TensorBoard has steps {sorted(shown)}, metrics.jsonl {sorted(points)}")
        for step, value in points.items():
            if not math.isclose(shown[step], value, rel_tol=1e-6, abs_tol=1e-30):  # float32 in the event
                sys.exit(f"{tag} at step {step}: TensorBoard {shown[step]}, metrics.jsonl {value}")
    print(f"TensorBoard read {len(events)} events with valid checksums; {len(expected)} scalar tags match "
          f"metrics.jsonl at steps {sorted(expected['train/loss'])}")


if __name__ == "__main__":
    main()
