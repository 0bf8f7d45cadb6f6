"""Shared pieces of the parity scripts (tools/parity_mamba.py, tools/parity_retnet.py): running
densessm-convert, comparing logits and tensors, and printing the result table."""
import json
import os
import subprocess
import sys

import numpy as np
import torch
from safetensors.torch import load_file

TOLERANCE = 1e-4  # relative error (max |ours - reference| / max |reference|) allowed in float32
TOLERANCE_FP64 = 1e-10  # the same in float64: what is left is rounding, so the functions are the same


def convert(binary, *args):
    """Runs densessm-convert; a failure stops the script with its error output."""
    result = subprocess.run([binary, *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"densessm-convert {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def our_logits(binary, model_dir, tokens, work, form, device):
    """Logits (B, T, V) of our model folder on `tokens` (B, T), through densessm-convert eval (float64 for
    a model imported with --dtype fp64, else float32)."""
    token_file = os.path.join(work, "tokens.json")
    with open(token_file, "w") as f:
        json.dump(tokens.tolist(), f)
    output = os.path.join(work, f"logits-{os.path.basename(model_dir)}-{form}.npy")
    convert(binary, "eval", "--checkpoint", model_dir, "--tokens", token_file, "--output", output,
            "--form", form, "--device", device)
    return torch.from_numpy(np.load(output))


def relative_error(ours, reference):
    ours, reference = ours.double().cpu(), reference.double().cpu()
    return ((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


def tensors_of(folder):
    """Every tensor of a Hugging Face folder (one file or shards)."""
    tensors = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(folder, name)))
    return tensors


def same_tensors(a, b):
    """Whether two {name: tensor} maps hold the same names, dtypes, shapes and bits."""
    def bits(t):
        return t.contiguous().reshape(-1).view(torch.uint8)

    if a.keys() != b.keys():
        return False
    return all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(bits(a[k]), bits(b[k])) for k in a)


def print_table(rows, columns):
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths)))


def setup_torch(device):
    """float32 as float32 (TF32 would add errors of about 1e-3 on the GPU), nothing downloaded, and
    transformers' advice (no fused Mamba kernels, generation mixins) and progress bars kept quiet."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {device}: no CUDA device")
