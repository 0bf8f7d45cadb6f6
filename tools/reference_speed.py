#!/usr/bin/env python3
"""The reference DenseRetNet's own generate(), timed on this machine: the anchor of the generation speed
target (issue 4) measured beside our figures on the same GPU.

The reference code is not part of this project. Point --reference-dir at a folder holding its
modeling_dense_gau_retnet.py (tools/gpu_stages.sh `parity` says how to get it). The model is built from one
of our configs (default configs/dense-retnet-1.3b.json) with random weights, in fp16 on the GPU, and its
generate() runs the reference's test (SPEC.md, "Inference speed test"): batch 6, a 2-token prompt, greedy,
one warm-up call, then the timed call; the prompt is fed one token at a time and every token decoded from
Python, as the reference does. Its cost per token does not depend on the position (the recurrent form), so
--new-tokens below 2048 gives the same ms per token in less time.

Usage: python3 tools/reference_speed.py --reference-dir .ref [--config FILE] [--new-tokens N] [--batch B]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_common import setup_torch  # noqa: E402
from parity_retnet import load_reference, reference_config  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-dir", required=True, help="folder with the reference's modeling_dense_gau_retnet.py")
    parser.add_argument("--config", default="configs/dense-retnet-1.3b.json", help="one of our DenseRetNet configs")
    parser.add_argument("--new-tokens", type=int, default=2048)
    parser.add_argument("--warmup-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=6)
    args = parser.parse_args()
    if args.new_tokens < 1 or args.warmup_tokens < 1 or args.batch < 1:
        sys.exit("reference_speed: --new-tokens, --warmup-tokens and --batch must be positive")
    setup_torch("cuda")
    module = load_reference(args.reference_dir)
    import transformers
    from transformers import GenerationConfig

    with open(args.config) as f:
        ours = json.load(f)
    if ours.get("architecture") != "retnet":
        sys.exit(f"reference_speed: {args.config} is not a RetNet config")
    retention = ours["retention"]
    keys = dict(vocab_size=ours["vocab_size"], hidden_size=ours["hidden_size"], num_hidden_layers=ours["num_layers"],
                query_key_dim=retention["query_key_dim"], num_attention_heads=retention["num_heads"],
                v_factor=retention["value_factor"], dense_block_layers=ours.get("dense_block_layers", 0),
                rms_norm_eps=ours["rms_norm_eps"])
    config = reference_config(module, keys)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = module.LlamaForCausalLM(config).eval()
    model = model.to(torch.float16)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"reference DenseRetNet from {args.config}: {parameters / 1e6:.1f} M parameters, fp16, "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}, transformers {transformers.__version__}")

    prompt = torch.randint(3, ours["vocab_size"], (args.batch, 2), device="cuda")

    def generate(new_tokens):
        return model.generate(prompt, generation_config=GenerationConfig(max_new_tokens=new_tokens, do_sample=False))

    try:
        generate(args.warmup_tokens)
    except (AttributeError, TypeError) as error:
        # A transformers release whose config lacks a default the reference's forward reads: the same
        # calls as its generate(), with those options given.
        print(f"the reference's generate() failed here ({error}); timing the same token-by-token calls with "
              "output_attentions, output_hidden_states and return_dict given")
        options = dict(forward_impl="recurrent", use_cache=True, return_dict=True, output_attentions=False,
                       output_hidden_states=False)

        @torch.inference_mode()
        def generate(new_tokens):
            past = model(prompt[:, :1], past_key_values={}, sequence_offset=0, **options).past_key_values
            tokens = prompt[:, -1:]
            for i in range(new_tokens):
                out = model(tokens[:, -1:], past_key_values=past, sequence_offset=1 + i, **options)
                past = out.past_key_values
                tokens = torch.cat([tokens, torch.argmax(out.logits[:, -1, :], dim=-1, keepdim=True)], dim=-1)
            return tokens[:, 1:]

        generate(args.warmup_tokens)
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = generate(args.new_tokens)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if out.shape != (args.batch, args.new_tokens):
        sys.exit(f"reference_speed: generate returned {tuple(out.shape)}, expected ({args.batch}, {args.new_tokens})")
    print(f"batch {args.batch}, prompt 2, {args.new_tokens} new tokens: {seconds:.2f} s, "
          f"{1e3 * seconds / args.new_tokens:.2f} ms per token, {args.new_tokens / seconds:.1f} tokens/s per sequence, "
          f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
