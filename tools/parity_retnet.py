#!/usr/bin/env python3
"""Parity of our DenseRetNet with the reference DenseRetNet code (He et al., 2024).

The reference code is not part of this project. Point --reference-dir at a folder holding its
modeling_dense_gau_retnet.py (for example modeling/dense_gau_retnet_1p3b of the reference repository);
without it the script says so and exits 0.

What parity can show: the reference has two forms that disagree with each other. Its recurrent form
normalises the retention state by sqrt(sum_i gamma^i), as all three of our forms do; its parallel form
also divides each score row by clamp(sum |row|, 1, 5e4), which has no recurrent equivalent and changes
the output through the group norm's epsilon (README, "One deliberate difference"). So our logits (each
of our parallel, chunkwise and recurrent forms) are held to the reference's recurrent form, token by
token, computed in float64 (with the parts the reference keeps in float32 made float64): our float64
models must agree to 1e-10 (the same function), our float32 models to 1e-4 (relative error,
max |difference| / max |reference|). Small random models can be ill-conditioned enough that float32
rounding alone comes near 1e-4 (a head output that nearly cancels is scaled up by the group norm), so
the reference's own float32 error is measured too (the larger of its two forms'), and a float32 result
within 3x of it also passes.
The distance of the reference's parallel form is printed for information.

For several configs (dense_block_layers 1 and 2, tied embeddings, heads of several sizes) it builds a
randomly initialised reference model, saves it (config.json + model.safetensors, as save_pretrained
writes them), imports it with `densessm-convert import --format hf-dense-retnet`, compares the logits,
exports our model back and checks that the tensors are bit-identical and that re-importing gives
bit-identical logits.

Usage: python3 tools/parity_retnet.py --convert build/densessm-convert --reference-dir PATH [--device cpu|cuda]
"""
import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity_common import (TOLERANCE, TOLERANCE_FP64, convert, our_logits, print_table, relative_error, same_tensors,  # noqa: E402
                           setup_torch, tensors_of)

# name, the reference's config keys
CONFIGS = [
    ("m1-d64-h2", dict(vocab_size=97, hidden_size=64, query_key_dim=32, num_attention_heads=2, num_hidden_layers=3,
                       dense_block_layers=1)),
    ("m2-d96-h3", dict(vocab_size=150, hidden_size=96, query_key_dim=48, num_attention_heads=3, num_hidden_layers=4,
                       dense_block_layers=2)),
    ("m1-d128-h4-tied", dict(vocab_size=64, hidden_size=128, query_key_dim=64, num_attention_heads=4, num_hidden_layers=2,
                             dense_block_layers=1, tie_word_embeddings=True)),
]


def load_reference(folder):
    """Imports the reference's modeling file. It imports top_k_top_p_filtering, which newer transformers
    releases dropped; the reference uses it only to sample in its generate(), which parity never calls."""
    path = os.path.join(folder, "modeling_dense_gau_retnet.py")
    if not os.path.isfile(path):
        sys.exit(f"--reference-dir {folder}: no modeling_dense_gau_retnet.py there")
    import transformers
    if not hasattr(transformers, "top_k_top_p_filtering"):
        def top_k_top_p_filtering(*args, **kwargs):
            raise NotImplementedError("not available in this transformers release")
        transformers.top_k_top_p_filtering = top_k_top_p_filtering
    spec = importlib.util.spec_from_file_location("modeling_dense_gau_retnet", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # transformers looks classes' modules up there
    spec.loader.exec_module(module)
    return module


def reference_config(module, keys):
    base = dict(v_factor=2, rms_norm_eps=1e-6, dropout=0.0, deepnorm=False, hidden_act="silu", initializer_range=0.02,
                max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                use_cache=False)
    base.update(keys)
    return module.LlamaConfig(**base)


def randomise(model):
    """Norm weights start at one: move them, so that a mix-up between them cannot go unnoticed."""
    for _, p in model.named_parameters():
        if p.dim() == 1:
            p.add_(0.2 * torch.randn_like(p))


def exact_rms_norm(self, hidden_states):
    """The reference's RMSNorm with the variance in the input's dtype (it takes it in float32 always)."""
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def exact_buffers(rel_pos, keys):
    """The reference computes its rotation angles and decays in float32 even for a float64 model; its
    function in float64 uses them exact, as our float64 models do."""
    half = keys["query_key_dim"] // keys["num_attention_heads"] // 2
    device = rel_pos.angle.device
    rel_pos.angle = (1.0 / 10000 ** torch.linspace(0, 1, half, dtype=torch.float64, device=device)).repeat_interleave(2)
    rel_pos.decay = torch.log(1 - 2 ** (-5 - torch.arange(keys["num_attention_heads"], dtype=torch.float64, device=device)))


def save(model, config, folder):
    """config.json and model.safetensors in the layout save_pretrained writes (tied lm_head left out)."""
    from safetensors.torch import save_file
    os.makedirs(folder)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=2, default=str)


def reference_logits(model, tokens, form):
    """(B, T, V): the reference's parallel form in one call, or its recurrent form token by token."""
    options = dict(use_cache=True, return_dict=True, output_attentions=False, output_hidden_states=False)
    if form == "parallel":
        return model(tokens, forward_impl="parallel", **options).logits
    past, steps = {}, []
    for t in range(tokens.shape[1]):
        out = model(tokens[:, t:t + 1], forward_impl="recurrent", past_key_values=past, sequence_offset=t, **options)
        past = out.past_key_values
        steps.append(out.logits)
    return torch.cat(steps, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--convert", default="build/densessm-convert", help="the densessm-convert binary")
    parser.add_argument("--reference-dir", help="folder with the reference's modeling_dense_gau_retnet.py")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both models run there)")
    parser.add_argument("--work", help="folder for the checkpoints (default: a temporary one, removed after)")
    parser.add_argument("--seq-len", type=int, default=19)
    args = parser.parse_args()
    if not args.reference_dir:
        print("parity_retnet: skipped: no --reference-dir given (a folder holding the reference's "
              "modeling_dense_gau_retnet.py, which is not part of this project)")
        return 0
    setup_torch(args.device)
    module = load_reference(args.reference_dir)

    work = args.work or tempfile.mkdtemp(prefix="parity-retnet-")
    rows, failed = [], False
    for index, (name, keys) in enumerate(CONFIGS):
        torch.manual_seed(2000 + index)
        case = os.path.join(work, name)
        shutil.rmtree(case, ignore_errors=True)
        os.makedirs(case)
        hf_dir, ours_dir, ours64_dir, export_dir = (os.path.join(case, d) for d in ("hf", "ours", "ours64", "exported"))
        tied = keys.get("tie_word_embeddings", False)
        # Built untied, then tied by hand: transformers 5 no longer reads the reference's list of tied weights.
        config = reference_config(module, dict(keys, tie_word_embeddings=False))
        model = module.LlamaForCausalLM(config).eval()
        if tied:
            model.lm_head.weight = model.model.embed_tokens.weight
            config.tie_word_embeddings = True
        randomise(model)
        save(model, config, hf_dir)
        tokens = torch.randint(0, keys["vocab_size"], (2, args.seq_len))
        # The reference's own forms, in float32 and (the exact values, up to 1e-16) in float64.
        # In float64, the reference's float32 parts (its norms' variance, its rotation and decay buffers)
        # are made float64 too: otherwise they alone differ from the exact values by about 1e-7.
        reference = {}
        norm_forward = module.LlamaRMSNorm.forward
        for dtype in (torch.float32, torch.float64):
            model = model.to(args.device, dtype)
            if dtype == torch.float64:
                exact_buffers(model.model.retnet_rel_pos, keys)
                module.LlamaRMSNorm.forward = exact_rms_norm
            for form in ("recurrent", "parallel"):
                reference[form, dtype] = reference_logits(model, tokens.to(args.device), form).cpu()
        module.LlamaRMSNorm.forward = norm_forward
        truth = reference["recurrent", torch.float64]

        convert(args.convert, "import", "--format", "hf-dense-retnet", "--input", hf_dir, "--output", ours_dir)
        convert(args.convert, "import", "--format", "hf-dense-retnet", "--input", hf_dir, "--output", ours64_dir,
                "--dtype", "fp64")
        forms = ("parallel", "chunkwise", "recurrent")
        ours = {form: our_logits(args.convert, ours_dir, tokens, case, form, args.device) for form in forms}
        errors = {form: relative_error(logits, truth) for form, logits in ours.items()}
        error64 = max(relative_error(our_logits(args.convert, ours64_dir, tokens, case, form, args.device), truth)
                      for form in forms)

        convert(args.convert, "export", "--format", "hf-dense-retnet", "--input", ours_dir, "--output", export_dir)
        tensors_equal = same_tensors(tensors_of(hf_dir), tensors_of(export_dir))
        reimport_dir = os.path.join(case, "reimported")
        convert(args.convert, "import", "--format", "hf-dense-retnet", "--input", export_dir, "--output", reimport_dir)
        reimport_equal = torch.equal(our_logits(args.convert, reimport_dir, tokens, case, "chunkwise", args.device),
                                     ours["chunkwise"])

        # A float32 model is held to 1e-4, or, where float32 rounding alone comes near that (the group norm
        # of a head output that nearly cancels amplifies it), to 3x the reference's own float32 error (the
        # larger of its two forms', against the same float64 values).
        reference_fp32 = max(relative_error(reference[form, torch.float32], truth) for form in ("recurrent", "parallel"))
        fp32_bound = max(TOLERANCE, 3 * reference_fp32)
        ok = (all(e <= fp32_bound for e in errors.values()) and error64 <= TOLERANCE_FP64 and tensors_equal and
              reimport_equal)
        failed |= not ok
        rows.append({"config": name, "m": keys["dense_block_layers"], "tied": tied,
                     "fp64 max over forms": f"{error64:.1e}",
                     "fp32 parallel": f"{errors['parallel']:.1e}", "fp32 chunkwise": f"{errors['chunkwise']:.1e}",
                     "fp32 recurrent": f"{errors['recurrent']:.1e}",
                     "ref fp32": f"{reference_fp32:.1e}",
                     "(info) ref parallel": f"{relative_error(reference['parallel', torch.float64], truth):.1e}",
                     "export==ref": tensors_equal, "reimport==ours": reimport_equal, "result": "PASS" if ok else "FAIL"})

    print(f"DenseRetNet parity on {args.device}: relative error of our logits against the reference code's recurrent form\n"
          f"computed in float64, for our models in float64 (tolerance {TOLERANCE_FP64:g}) and float32 (tolerance {TOLERANCE:g},\n"
          "or 3x the reference's own float32 error, 'ref fp32', where that is larger); for information, the distance\n"
          "of the reference's parallel form (the row normalisation we omit):")
    print_table(rows, list(rows[0].keys()))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
