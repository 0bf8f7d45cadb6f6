// Checkpoint interchange with Hugging Face layouts, and our own model folders.
//
// Two external layouts, both config.json + safetensors (one file, or shards with
// model.safetensors.index.json):
//   - hf-mamba: transformers' MambaForCausalLM (backbone.embeddings, backbone.layers.{i}.mixer.*, ...).
//     DenseMamba models add their dense tensors (mixer.x_select.*, mixer.x_norm) and are marked
//     model_type "dense_mamba", so that transformers does not take them for a plain Mamba.
//   - hf-dense-retnet: the reference DenseRetNet code's layout (model.layers.{i}.self_attn.*, ...).
//     Plain RetNet (dense_block_layers 0) is our extension: the reference always builds the dense
//     parameters and normalises keys and values from layer 1 on.
// A model folder (ours) holds model.json (the ModelConfig) and model.pt, exactly the model part of a
// training checkpoint, and tokenizer.model when one is known, so densessm-train (init_from) and
// densessm-generate read imported models the way they read checkpoints. model.pt keeps the model's
// dtype: read it with load_model_folder, which converts the model before loading.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include <torch/types.h>

#include "densessm/model.h"

namespace densessm {

/// A problem converting between layouts (missing, unexpected or misshapen tensor, unsupported config):
/// what() names the file and the tensor or key.
class ConvertError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class ExternalFormat { kHfMamba, kHfDenseRetNet };

/// "hf-mamba" or "hf-dense-retnet"; throws ConvertError otherwise.
ExternalFormat parse_external_format(const std::string& name);
std::string to_string(ExternalFormat format);

/// Builds our model from a Hugging Face folder (config.json + safetensors); its tensors (F64, F32, F16
/// or BF16) are converted to `dtype`. Every tensor of the layout must be present with its exact shape,
/// and no other tensor may be: errors name the tensor and both shapes.
CausalLM import_model(ExternalFormat format, const std::string& folder, torch::ScalarType dtype = torch::kFloat);

struct ExportOptions {
  torch::ScalarType dtype = torch::kFloat;  ///< stored dtype: float32, float16 or bfloat16
  uint64_t shard_bytes = 0;                 ///< 0: one model.safetensors; else shards of at most this size
  bool replace = false;                     ///< replace an existing output folder (after the new one is complete)
};

/// Writes config.json and the safetensors file(s) of `model` into `folder`, atomically.
void export_model(ExternalFormat format, CausalLM& model, const std::string& folder, const ExportOptions& options = {});

/// Reads a model folder or training checkpoint (model.json + model.pt); given a training output_dir, its
/// newest checkpoint. The model keeps the stored dtype, on the CPU.
CausalLM load_model_folder(const std::string& folder);

/// Writes model.json and model.pt into `folder`, atomically (an existing folder only when `replace`), and
/// a copy of `tokenizer` (a sentencepiece model, if not empty) as tokenizer.model, where generation looks.
void save_model_folder(CausalLM& model, const std::string& folder, bool replace = false, const std::string& tokenizer = "");

}  // namespace densessm
