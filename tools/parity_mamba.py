#!/usr/bin/env python3
"""Parity of our Mamba with transformers' MambaForCausalLM.

For several configs (tied and untied embeddings, a d_model not divisible by 16, small vocabularies,
no conv bias, sharded and bfloat16 checkpoints) it builds a randomly initialised MambaForCausalLM, saves
it with save_pretrained (safetensors), imports it with `densessm-convert import`, and compares the
logits on random tokens (our chunkwise and recurrent forms against transformers' forward): relative
error <= 1e-4 in float32. Then it exports our model back and checks that the exported tensors are
bit-identical to transformers' own, that transformers loads the export and computes bit-identical
logits, and that re-importing the export gives bit-identical logits.

Usage: python3 tools/parity_mamba.py --convert build/densessm-convert [--device cpu|cuda] [--work DIR]
Exit status 0 when every config passes. Needs torch, transformers and safetensors; downloads nothing.
"""
import argparse
import os
import shutil
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_common import (TOLERANCE, convert, our_logits, print_table, relative_error, same_tensors,  # noqa: E402
                           setup_torch, tensors_of)

# name, MambaConfig arguments, save_pretrained options, stored dtype
CONFIGS = [
    ("tied-d64", dict(vocab_size=96, hidden_size=64, num_hidden_layers=2, state_size=8, tie_word_embeddings=True), {},
     torch.float32),
    ("untied-d72", dict(vocab_size=101, hidden_size=72, num_hidden_layers=3, state_size=16, tie_word_embeddings=False),
     {}, torch.float32),
    ("d40-rank7-noconvbias-k3", dict(vocab_size=50, hidden_size=40, num_hidden_layers=2, state_size=4, time_step_rank=7,
                                     use_conv_bias=False, conv_kernel=3, tie_word_embeddings=True), {}, torch.float32),
    ("sharded-d80-expand3", dict(vocab_size=257, hidden_size=80, num_hidden_layers=4, expand=3), dict(max_shard_size="60KB"),
     torch.float32),
    ("bf16-d72", dict(vocab_size=64, hidden_size=72, num_hidden_layers=2, tie_word_embeddings=False), {}, torch.bfloat16),
]


def randomise(model):
    """Moves the parameters that initialise to constants (norm weights, D, A_log, biases) away from them,
    so that a mix-up between them cannot go unnoticed."""
    for name, p in model.named_parameters():
        if p.dim() == 1 or name.endswith("A_log"):
            p.add_(0.2 * torch.randn_like(p))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--convert", default="build/densessm-convert", help="the densessm-convert binary")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both models run there)")
    parser.add_argument("--work", help="folder for the checkpoints (default: a temporary one, removed after)")
    parser.add_argument("--seq-len", type=int, default=23)
    args = parser.parse_args()
    setup_torch(args.device)
    from transformers import MambaConfig, MambaForCausalLM

    work = args.work or tempfile.mkdtemp(prefix="parity-mamba-")
    rows, failed = [], False
    for index, (name, kwargs, save_options, dtype) in enumerate(CONFIGS):
        torch.manual_seed(1000 + index)
        case = os.path.join(work, name)
        shutil.rmtree(case, ignore_errors=True)
        os.makedirs(case)
        hf_dir, ours_dir, export_dir = (os.path.join(case, d) for d in ("hf", "ours", "exported"))

        model = MambaForCausalLM(MambaConfig(**kwargs)).eval()
        tied = model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr()
        randomise(model)
        model = model.to(dtype)
        model.save_pretrained(hf_dir, **save_options)
        # The reference computation in float32 from the stored (possibly rounded) weights.
        reference_model = model.float().to(args.device)
        tokens = torch.randint(0, kwargs["vocab_size"], (3, args.seq_len))
        reference = reference_model(tokens.to(args.device), use_cache=False).logits.float().cpu()

        convert(args.convert, "import", "--format", "hf-mamba", "--input", hf_dir, "--output", ours_dir)
        errors = {form: relative_error(our_logits(args.convert, ours_dir, tokens, case, form, args.device), reference)
                  for form in ("chunkwise", "recurrent")}

        # Export in the stored dtype: transformers' tensors come back bit for bit.
        export_dtype = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
        export_args = ["--shard-size", "60000"] if save_options else []
        convert(args.convert, "export", "--format", "hf-mamba", "--input", ours_dir, "--output", export_dir,
                "--dtype", export_dtype, *export_args)
        tensors_equal = same_tensors(tensors_of(hf_dir), tensors_of(export_dir))
        reloaded = MambaForCausalLM.from_pretrained(export_dir).float().to(args.device).eval()
        hf_reload_equal = torch.equal(reloaded(tokens.to(args.device), use_cache=False).logits.float().cpu(), reference)
        reimport_dir = os.path.join(case, "reimported")
        convert(args.convert, "import", "--format", "hf-mamba", "--input", export_dir, "--output", reimport_dir)
        reimport_equal = torch.equal(our_logits(args.convert, reimport_dir, tokens, case, "chunkwise", args.device),
                                     our_logits(args.convert, ours_dir, tokens, case, "chunkwise", args.device))

        ok = all(e <= TOLERANCE for e in errors.values()) and tensors_equal and hf_reload_equal and reimport_equal
        failed |= not ok
        rows.append({"config": name, "d_model": kwargs["hidden_size"], "tied": tied,
                     "stored": str(dtype).replace("torch.", ""), "shards": len([f for f in os.listdir(hf_dir) if f.endswith(".safetensors")]),
                     "rel.err chunkwise": f"{errors['chunkwise']:.2e}", "rel.err recurrent": f"{errors['recurrent']:.2e}",
                     "export==HF": tensors_equal, "HF(export)==HF": hf_reload_equal, "reimport==ours": reimport_equal,
                     "result": "PASS" if ok else "FAIL"})

    print(f"Mamba parity against transformers' MambaForCausalLM on {args.device} (tolerance {TOLERANCE:g}):")
    print_table(rows, list(rows[0].keys()))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
