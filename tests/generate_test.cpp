// Generation: prefill + recurrent decoding against the parallel forward (teacher forcing), batching of
// prompts of different lengths, constant state size, seeds, the sampling filters on hand-made logits, CUDA
// graph replay against eager steps, bad options, bad checkpoints and the densessm-generate executable.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "densessm/convert.h"
#include "densessm/generate.h"
#include "generate/batch_decoder.h"
#include "generate/sampling.h"
#include "generate/text_stream.h"
#include "test_helpers.h"
#include "text_fixtures.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;
using densessm::testing::config_path;
using densessm::testing::DeviceTest;

const char* kKinds[] = {"tiny-dense-retnet.json", "tiny-retnet.json", "tiny-dense-mamba.json", "tiny-mamba.json"};
constexpr double kInf = std::numeric_limits<double>::infinity();

CausalLM tiny_model(const std::string& config) {
  torch::manual_seed(7);
  return CausalLM(load_model_config(config_path(config)));
}

std::vector<std::vector<int32_t>> random_prompts(const std::vector<int64_t>& lengths, int64_t vocab) {
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t n : lengths) {
    auto t = torch::randint(3, vocab, {n}, torch::kInt);
    prompts.emplace_back(t.data_ptr<int32_t>(), t.data_ptr<int32_t>() + n);
  }
  return prompts;
}

GenerateOptions greedy(int64_t new_tokens, torch::Device device, torch::ScalarType dtype) {
  GenerateOptions o;
  o.max_new_tokens = new_tokens;
  o.temperature = 0;
  o.stop_at_eos = false;
  o.device = device;
  o.dtype = dtype;
  return o;
}

template <typename Fn>
void expect_error(Fn fn, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << fragment << "'";
  } catch (const GenerateError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

class GenerationTest : public DeviceTest {};
DENSESSM_DEVICE_SUITE(GenerationTest);

// Greedy decoding through prefill + steps picks, at every position, the argmax of the parallel forward's
// logits over the same tokens. float64, so that no near-tie can flip between the forms.
TEST_P(GenerationTest, GreedyDecodingIsTheArgmaxOfTheParallelForward) {
  for (const char* kind : kKinds) {
    SCOPED_TRACE(kind);
    CausalLM model = tiny_model(kind);
    Generator generator(model, std::nullopt, greedy(12, device(), torch::kDouble));
    const auto prompts = random_prompts({5, 9, 1}, model->config().vocab_size);
    const GenerateResult result = generator.generate_tokens(prompts);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < prompts.size(); ++i) {
      std::vector<int64_t> all(prompts[i].begin(), prompts[i].end());
      all.insert(all.end(), result.sequences[i].tokens.begin(), result.sequences[i].tokens.end());
      ASSERT_EQ(result.sequences[i].tokens.size(), 12u);
      ForwardOptions parallel;
      parallel.form = SequenceForm::kParallel;
      const auto tokens = torch::tensor(all).view({1, -1}).to(device());
      const auto expected = model->forward(tokens, nullptr, parallel).argmax(-1).squeeze(0).cpu();  // (T)
      for (size_t t = prompts[i].size() - 1; t + 1 < all.size(); ++t) {
        EXPECT_EQ(all[t + 1], expected[static_cast<int64_t>(t)].item<int64_t>()) << "sequence " << i << " position " << t;
      }
    }
  }
}

TEST_P(GenerationTest, PromptsOfDifferentLengthsInOneBatchGiveWhatEachGivesAlone) {
  for (const char* kind : kKinds) {
    SCOPED_TRACE(kind);
    CausalLM model = tiny_model(kind);
    Generator generator(model, std::nullopt, greedy(10, device(), torch::kDouble));
    const auto prompts = random_prompts({3, 7, 1, 7}, model->config().vocab_size);
    const GenerateResult batch = generator.generate_tokens(prompts);
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(batch.sequences[i].tokens, generator.generate_tokens({prompts[i]}).sequences[0].tokens) << "prompt " << i;
    }
  }
}

TEST_P(GenerationTest, TheStateDoesNotGrowWithGeneratedTokens) {
  for (const char* kind : kKinds) {
    SCOPED_TRACE(kind);
    CausalLM model = tiny_model(kind);
    model->to(device());
    model->eval();
    torch::NoGradGuard no_grad;
    const int64_t B = 2;
    DecodeState state = model->initial_state(B);
    const int64_t bytes = state.nbytes();
    const auto logits = model->forward(torch::randint(3, 100, {B, 6}, torch::kLong).to(device()), &state);
    EXPECT_EQ(state.nbytes(), bytes);
    BatchDecoder decoder(model, SamplingParams{}, B, /*cuda_graph=*/true);
    auto seen = torch::zeros({B, model->config().vocab_size}, torch::TensorOptions().dtype(torch::kBool).device(device()));
    auto tokens = decoder.start(state, seen, logits.select(1, -1), 1);
    for (int i = 0; i < 100; ++i) {
      tokens = decoder.next(tokens);
      ASSERT_EQ(decoder.state().nbytes(), bytes) << "after " << i + 1 << " steps";
    }
    EXPECT_EQ(decoder.state().position.cpu()[0].item<int64_t>(), 6 + 100);
  }
}

TEST_P(GenerationTest, TheSameSeedGivesTheSameSample) {
  CausalLM model = tiny_model("tiny-dense-mamba.json");
  GenerateOptions o = greedy(24, device(), torch::kFloat);
  o.temperature = 1.0;
  o.top_k = 50;
  o.top_p = 0.9;
  o.repetition_penalty = 1.2;
  o.seed = 11;
  const auto prompts = random_prompts({4, 2}, model->config().vocab_size);
  Generator a(model, std::nullopt, o);
  const auto first = a.generate_tokens(prompts), again = a.generate_tokens(prompts);
  o.seed = 12;
  Generator b(model, std::nullopt, o);
  const auto other = b.generate_tokens(prompts);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(first.sequences[i].tokens, again.sequences[i].tokens);
    // 24 draws, each among tens of tokens: equal by chance with a negligible probability.
    EXPECT_NE(first.sequences[i].tokens, other.sequences[i].tokens);
  }
}

TEST_P(GenerationTest, SequencesStopAtEosAndAreNoLongerStreamed) {
  const auto prompts = random_prompts({4, 6}, 512);
  const auto unstopped = Generator(tiny_model("tiny-dense-retnet.json"), std::nullopt, greedy(16, device(), torch::kDouble))
                             .generate_tokens(prompts);
  // Make the 4th token of sequence 0 the eos (a model with the same weights: the eos id does not change them).
  const auto& first = unstopped.sequences[0].tokens;
  const int32_t eos = first[3];
  ModelConfig config = load_model_config(config_path("tiny-dense-retnet.json"));
  config.eos_token_id = eos;
  torch::manual_seed(7);
  CausalLM model(config);
  GenerateOptions o = greedy(16, device(), torch::kDouble);
  o.stop_at_eos = true;
  std::vector<int> events(2, 0), last(2, 0);
  const auto stopped = Generator(model, std::nullopt, o).generate_tokens(prompts, [&](const TokenEvent& e) {
    ASSERT_EQ(last[e.sequence], 0) << "an event after the sequence's last";
    ++events[e.sequence];
    last[e.sequence] += e.last;
  });
  for (size_t i = 0; i < 2; ++i) {
    const auto& all = unstopped.sequences[i].tokens;
    const auto at = std::find(all.begin(), all.end(), eos);
    const std::vector<int32_t> expected(all.begin(), at == all.end() ? all.end() : at + 1);
    EXPECT_EQ(stopped.sequences[i].tokens, expected) << "sequence " << i;
    EXPECT_EQ(stopped.sequences[i].stop_reason, at == all.end() ? StopReason::kLength : StopReason::kEos);
    EXPECT_EQ(events[i], static_cast<int>(expected.size()));
    EXPECT_EQ(last[i], 1);
  }
  EXPECT_LE(stopped.sequences[0].tokens.size(), 4u);
}

// On CUDA the decode step is a graph replay: it must give exactly the tokens of eager steps, for every
// model kind, greedy and sampled, also when the captured graph is reused by a second call.
TEST_P(GenerationTest, CudaGraphReplayGivesTheTokensOfEagerSteps) {
  if (!device().is_cuda()) GTEST_SKIP() << "CUDA graphs: CUDA only";
  for (const char* kind : kKinds) {
    for (double temperature : {0.0, 1.0}) {
      SCOPED_TRACE(std::string(kind) + " temperature " + std::to_string(temperature));
      CausalLM model = tiny_model(kind);
      GenerateOptions o = greedy(40, device(), torch::kFloat);
      o.temperature = temperature;
      o.seed = 5;
      const auto prompts = random_prompts({3, 8, 5}, model->config().vocab_size);
      o.cuda_graph = false;
      const auto eager = Generator(model, std::nullopt, o).generate_tokens(prompts);
      o.cuda_graph = true;
      Generator graphed(model, std::nullopt, o);
      const auto first = graphed.generate_tokens(prompts), second = graphed.generate_tokens(prompts);
      EXPECT_TRUE(first.stats.cuda_graph);
      for (size_t i = 0; i < prompts.size(); ++i) {
        EXPECT_EQ(first.sequences[i].tokens, eager.sequences[i].tokens) << "sequence " << i;
        EXPECT_EQ(second.sequences[i].tokens, eager.sequences[i].tokens) << "sequence " << i << ", graph reused";
      }
    }
  }
}

class SamplingTest : public DeviceTest {
 protected:
  torch::Tensor row(const std::vector<double>& values) { return torch::tensor(values, options()).view({1, -1}); }
  std::vector<double> values(const torch::Tensor& t) {
    auto c = t.to(torch::kCPU, torch::kDouble).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  }
};
DENSESSM_DEVICE_SUITE(SamplingTest);

TEST_P(SamplingTest, TopKKeepsTheKLargestAndTheirTies) {
  EXPECT_EQ(values(filter_top_k(row({1, 3, 2, 0}), 2)), (std::vector<double>{-kInf, 3, 2, -kInf}));
  EXPECT_EQ(values(filter_top_k(row({1, 2, 2, 0}), 1)), (std::vector<double>{-kInf, 2, 2, -kInf}));
  EXPECT_EQ(values(filter_top_k(row({1, 3, 2, 0}), 0)), (std::vector<double>{1, 3, 2, 0}));
  EXPECT_EQ(values(filter_top_k(row({1, 3, 2, 0}), 9)), (std::vector<double>{1, 3, 2, 0}));
}

TEST_P(SamplingTest, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.15, 0.5, 0.05, 0.3: in descending order 0.5, 0.3, 0.15, 0.05, cumulative 0.5, 0.8, 0.95, 1.
  const auto logits = row({std::log(0.15), std::log(0.5), std::log(0.05), std::log(0.3)});
  auto kept = [&](double p) {
    std::vector<bool> out;
    for (double v : values(filter_top_p(logits, p))) out.push_back(v > -kInf);
    return out;
  };
  EXPECT_EQ(kept(0.45), (std::vector<bool>{false, true, false, false}));  // 0.5 alone reaches 0.45
  EXPECT_EQ(kept(0.75), (std::vector<bool>{false, true, false, true}));   // 0.5 + 0.3
  EXPECT_EQ(kept(0.9), (std::vector<bool>{true, true, false, true}));     // + 0.15
  EXPECT_EQ(kept(1.0), (std::vector<bool>{true, true, true, true}));
  EXPECT_EQ(kept(1e-9), (std::vector<bool>{false, true, false, false}));  // the most likely always stays
}

TEST_P(SamplingTest, RepetitionPenaltyLowersSeenTokens) {
  const auto seen = torch::tensor({true, true, false, true}, options(torch::kBool)).view({1, -1});
  EXPECT_EQ(values(apply_repetition_penalty(row({2, -2, 1, 0}), seen, 2.0)), (std::vector<double>{1, -4, 1, 0}));
  EXPECT_EQ(values(apply_repetition_penalty(row({2, -2, 1, 0}), seen, 1.0)), (std::vector<double>{2, -2, 1, 0}));
}

TEST_P(SamplingTest, ChoiceFollowsPenaltyFiltersAndNoise) {
  auto seen = torch::tensor({true, false, false}, options(torch::kBool)).view({1, -1});
  const auto logits = row({std::log(0.5), std::log(0.3), std::log(0.2)});
  SamplingParams greedy{0.0, 0, 1.0, 1.0};
  auto s = seen.clone();
  EXPECT_EQ(choose_next(logits, s, {}, greedy).item<int64_t>(), 0);
  EXPECT_TRUE(s[0][0].item<bool>());
  // Penalty 3 on token 0: log(0.5) * 3 = -2.08 < log(0.3) = -1.20.
  SamplingParams penalised{0.0, 0, 1.0, 3.0};
  s = seen.clone();
  EXPECT_EQ(choose_next(logits, s, {}, penalised).item<int64_t>(), 1);
  EXPECT_TRUE(s[0][1].item<bool>()) << "the chosen token is marked seen";
  // Exponential race: p / E = (0.5, 3, 0.2) with E = (1, 0.1, 1) picks token 1 ...
  const auto noise = row({1.0, 0.1, 1.0}).to(torch::kFloat);
  SamplingParams sample{1.0, 0, 1.0, 1.0};
  s = seen.clone();
  EXPECT_EQ(choose_next(logits, s, noise, sample).item<int64_t>(), 1);
  // ... unless top-k 1 or top-p 0.4 leaves token 0 alone.
  SamplingParams top_k{1.0, 1, 1.0, 1.0}, top_p{1.0, 0, 0.4, 1.0};
  EXPECT_EQ(choose_next(logits, s, noise, top_k).item<int64_t>(), 0);
  EXPECT_EQ(choose_next(logits, s, noise, top_p).item<int64_t>(), 0);
}

TEST_P(SamplingTest, DrawsFollowTheTemperedDistribution) {
  // 20000 rows of the same logits: the frequencies approach softmax(logits / T) (4 sigma < 0.015).
  const int64_t rows = 20000;
  const auto logits = row({0.0, 1.0, 2.0}).expand({rows, 3});
  auto generator_noise = torch::empty({rows, 3}, options()).exponential_(1.0);
  for (double temperature : {1.0, 2.0}) {
    SamplingParams p{temperature, 0, 1.0, 1.0};
    auto seen = torch::zeros({rows, 3}, options(torch::kBool));
    const auto chosen = choose_next(logits, seen, generator_noise, p).cpu();
    const auto expected = (torch::tensor({0.0, 1.0, 2.0}, torch::kDouble) / temperature).softmax(0);
    for (int64_t v = 0; v < 3; ++v) {
      const double frequency = (chosen == v).sum().item<double>() / static_cast<double>(rows);
      EXPECT_NEAR(frequency, expected[v].item<double>(), 0.015) << "token " << v << " at temperature " << temperature;
    }
    generator_noise.exponential_(1.0);
  }
}

TEST(GenerationErrors, InvalidOptionsAreRejected) {
  auto with = [](auto change) {
    GenerateOptions o;
    change(o);
    return o;
  };
  expect_error([&] { validate(with([](GenerateOptions& o) { o.temperature = -0.5; })); }, "temperature must be >= 0");
  expect_error([&] { validate(with([](GenerateOptions& o) { o.top_p = 0; })); }, "top-p must be in (0, 1]");
  expect_error([&] { validate(with([](GenerateOptions& o) { o.top_p = 1.5; })); }, "top-p must be in (0, 1]");
  expect_error([&] { validate(with([](GenerateOptions& o) { o.top_k = -1; })); }, "top-k must be >= 0");
  expect_error([&] { validate(with([](GenerateOptions& o) { o.repetition_penalty = 0; })); }, "repetition penalty must be > 0");
  expect_error([&] { validate(with([](GenerateOptions& o) { o.max_new_tokens = 0; })); }, "max new tokens");
  expect_error([&] { validate(with([](GenerateOptions& o) { o.stop_strings = {""}; })); }, "stop string is empty");
  expect_error([] { parse_dtype("fp8"); }, "unknown dtype 'fp8'");
  // The Generator validates too, before touching the model.
  expect_error([] { Generator(tiny_model("tiny-retnet.json"), std::nullopt, [] { GenerateOptions o; o.top_k = -3; return o; }()); },
               "top-k");
  Generator generator(tiny_model("tiny-retnet.json"), std::nullopt, greedy(2, torch::kCPU, torch::kFloat));
  expect_error([&] { generator.generate_tokens({}); }, "no prompts");
  expect_error([&] { generator.generate_tokens({{5, 6}, {}}); }, "prompt 2 has no tokens");
  expect_error([&] { generator.generate_tokens({{5, 512}}); }, "token id 512 is outside the vocabulary [0, 512)");
  expect_error([&] { generator.generate({"hello"}); }, "needs a tokenizer");
}

// A tiny checkpoint folder as densessm-train writes it, with a tokenizer of the model's vocabulary.
class GenerationCheckpoint : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("densessm-generate-" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "run" / "checkpoints" / "step-00000004");
    tokenizer_ = densessm::testing::train_sample_tokenizer(dir_, "tok");
    config_ = load_model_config(config_path("tiny-dense-retnet.json"));
    config_.vocab_size = Tokenizer::load(tokenizer_).vocab_size();
    write_checkpoint(good());
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static fs::path good() { return dir_ / "run" / "checkpoints" / "step-00000004"; }
  static void write_checkpoint(const fs::path& folder) {
    fs::create_directories(folder);
    torch::manual_seed(3);
    CausalLM model(config_);
    torch::save(model, (folder / "model.pt").string());
    std::ofstream(folder / "model.json") << to_json(config_);
    fs::copy_file(tokenizer_, folder / "tokenizer.model", fs::copy_options::overwrite_existing);
  }
  // A copy of the good checkpoint, changed by `damage`.
  template <typename Fn>
  static std::string damaged(const std::string& name, Fn damage) {
    const fs::path folder = dir_ / name;
    write_checkpoint(folder);
    damage(folder);
    return folder.string();
  }

  static fs::path dir_;
  static std::string tokenizer_;
  static ModelConfig config_;
};
fs::path GenerationCheckpoint::dir_;
std::string GenerationCheckpoint::tokenizer_;
ModelConfig GenerationCheckpoint::config_;

TEST_F(GenerationCheckpoint, LoadsAndGeneratesText) {
  for (const fs::path& path : {good(), dir_ / "run", dir_ / "run" / "checkpoints"}) {
    SCOPED_TRACE(path.string());
    Checkpoint c = load_checkpoint(path.string());
    EXPECT_EQ(c.config.vocab_size, config_.vocab_size);
    GenerateOptions o = greedy(8, torch::kCPU, torch::kFloat);
    o.stop_strings = {"zzz-never"};
    Generator generator(c.model, c.tokenizer, o);
    std::vector<std::string> streamed(2);
    int last_events = 0;
    const auto result = generator.generate({"the farmer walked", "a quiet bird"}, [&](const TokenEvent& e) {
      streamed.at(e.sequence) += e.text;
      last_events += e.last;
    });
    EXPECT_EQ(last_events, 2);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(result.sequences[i].tokens.size(), 8u);
      EXPECT_EQ(streamed[i], result.sequences[i].text) << "the streamed pieces add up to the text";
      EXPECT_EQ(result.sequences[i].text,
                decode_continuation(c.tokenizer, result.sequences[i].prompt_tokens, result.sequences[i].tokens));
    }
  }
}

TEST_F(GenerationCheckpoint, TextStreamsHoldBackStopStringsAndCutBeforeThem) {
  const Tokenizer tokenizer = Tokenizer::load(tokenizer_);
  const auto prompt = tokenizer.encode("the farmer");
  const auto rest = tokenizer.encode("the farmer walked toward the green hill");
  ASSERT_TRUE(std::equal(prompt.begin(), prompt.end(), rest.begin()));
  TextStream stream(tokenizer, prompt, {"green hill", "xyz"});
  std::string printed;
  for (size_t i = prompt.size(); i < rest.size() && !stream.stopped(); ++i) {
    printed += stream.push(rest[i]);
    // Nothing that could begin a stop string is printed before it is resolved.
    EXPECT_EQ(printed.find("gr"), std::string::npos) << printed;
  }
  printed += stream.finish();
  EXPECT_TRUE(stream.stopped());
  EXPECT_EQ(stream.text(), " walked toward the ");
  EXPECT_EQ(printed, stream.text());
  TextStream plain(tokenizer, prompt, {});
  for (size_t i = prompt.size(); i < rest.size(); ++i) plain.push(rest[i]);
  EXPECT_EQ(plain.text(), " walked toward the green hill");
  EXPECT_FALSE(plain.stopped());
}

// An imported model folder keeps its stored dtype (densessm-convert import --dtype bf16): it loads as that
// dtype with the same weights, not reinterpreted bytes.
TEST_F(GenerationCheckpoint, LoadsAModelFolderStoredInBfloat16) {
  torch::manual_seed(5);
  CausalLM model(config_);
  model->to(torch::kBFloat16);
  const fs::path folder = dir_ / "imported-bf16";
  save_model_folder(model, folder.string(), /*replace=*/true, tokenizer_);
  Checkpoint c = load_checkpoint(folder.string());
  const auto tokens = torch::randint(0, config_.vocab_size, {2, 9}, torch::kLong);
  EXPECT_EQ(c.model->parameters().front().scalar_type(), torch::kBFloat16);
  torch::NoGradGuard no_grad;
  model->eval();
  EXPECT_TRUE(torch::equal(c.model->forward(tokens), model->forward(tokens)));
}

TEST_F(GenerationCheckpoint, PromptsThatAreEmptyOrTokenizeToNothingAreRejected) {
  Checkpoint c = load_checkpoint(good().string());
  Generator generator(c.model, c.tokenizer, greedy(2, torch::kCPU, torch::kFloat));
  expect_error([&] { generator.generate({"the river", ""}); }, "prompt 2 is empty");
  expect_error([&] { generator.generate({"   "}); }, "tokenizes to nothing");
}

TEST_F(GenerationCheckpoint, BadCheckpointsAreRejected) {
  expect_error([] { load_checkpoint((dir_ / "nowhere").string()); }, "no such checkpoint folder");
  expect_error([] { load_checkpoint(dir_.string()); }, "not a checkpoint folder");
  expect_error([] { load_checkpoint(damaged("no-tokenizer", [](const fs::path& f) { fs::remove(f / "tokenizer.model"); })); },
               "tokenizer.model: missing");
  expect_error([] { load_checkpoint(damaged("no-config", [](const fs::path& f) { fs::remove(f / "model.json"); })); },
               "not a checkpoint folder");
  expect_error([] { load_checkpoint(damaged("no-weights", [](const fs::path& f) { fs::remove(f / "model.pt"); })); },
               "model.pt: missing");
  expect_error([] {
    load_checkpoint(damaged("other-vocab", [](const fs::path& f) {
      ModelConfig other = config_;
      other.vocab_size = 512;
      std::ofstream(f / "model.json") << to_json(other);
    }));
  }, "the tokenizer has 400 pieces but the model config's vocab_size is 512");
  expect_error([] {
    load_checkpoint(damaged("bad-config", [](const fs::path& f) { std::ofstream(f / "model.json") << "{\"hidden_size\": 3"; }));
  }, "malformed JSON");
  expect_error([] {
    load_checkpoint(damaged("truncated", [](const fs::path& f) { fs::resize_file(f / "model.pt", fs::file_size(f / "model.pt") / 2); }));
  }, "model.pt: corrupt");
}

// The executable: exit codes and messages for bad input, and a normal run.
struct ProcessResult {
  int status = -1;
  std::string output;  // stdout and stderr together
};
ProcessResult run_generate(const std::string& arguments, const std::string& input = "/dev/null") {
  const std::string command = std::string(DENSESSM_GENERATE_BINARY) + " " + arguments + " 2>&1 <" + input;
  ProcessResult run;
  FILE* pipe = ::popen(command.c_str(), "r");
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0;) run.output.append(buffer, n);
  const int status = ::pclose(pipe);
  run.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

TEST_F(GenerationCheckpoint, CommandLine) {
  const std::string checkpoint = "--checkpoint " + good().string() + " --device cpu ";
  ProcessResult ok = run_generate(checkpoint + "--prompt 'the old king' -n 6 --seed 3");
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_NE(ok.output.find("the old king"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("tokens/s"), std::string::npos) << ok.output;
  EXPECT_EQ(run_generate("--help").status, 0);
  // Prompts from a file (blank lines skipped), decoded as one batch, and from standard input.
  const std::string prompts = (dir_ / "prompts.txt").string();
  std::ofstream(prompts) << "the river\n\na quiet bird looked\n";
  ProcessResult batch = run_generate(checkpoint + "--prompt-file " + prompts + " -b 2 -n 4 --greedy");
  EXPECT_EQ(batch.status, 0) << batch.output;
  EXPECT_NE(batch.output.find("[1] the river"), std::string::npos) << batch.output;
  EXPECT_NE(batch.output.find("[2] a quiet bird looked"), std::string::npos) << batch.output;
  EXPECT_NE(batch.output.find("batch 2"), std::string::npos) << batch.output;
  ProcessResult piped = run_generate(checkpoint + "-n 3", prompts);
  EXPECT_EQ(piped.status, 0) << piped.output;
  EXPECT_NE(piped.output.find("a quiet bird looked"), std::string::npos) << piped.output;
  const std::pair<std::string, std::string> bad[] = {
      {checkpoint + "--prompt hi --temperature -1", "temperature must be >= 0"},
      {checkpoint + "--prompt hi --top-p 0", "top-p must be in (0, 1]"},
      {checkpoint + "--prompt hi --top-p 1.5", "top-p must be in (0, 1]"},
      {checkpoint + "--prompt hi --top-k -2", "top-k must be >= 0"},
      {checkpoint + "--prompt hi --repetition-penalty 0", "repetition penalty must be > 0"},
      {checkpoint + "--prompt ''", "prompt 1 is empty"},
      {checkpoint + "--prompt '   '", "tokenizes to nothing"},
      {checkpoint, "standard input: no prompts"},
      {checkpoint + "--prompt-file " + (dir_ / "missing.txt").string(), "cannot open the prompt file"},
      {"--checkpoint " + (dir_ / "nowhere").string() + " --prompt hi", "no such checkpoint folder"},
      {"--prompt hi", "--checkpoint is required"},
      {checkpoint + "--prompt hi --dtype fp8", "--dtype"},
  };
  for (const auto& [arguments, message] : bad) {
    const ProcessResult r = run_generate(arguments);
    EXPECT_NE(r.status, 0) << arguments;
    EXPECT_NE(r.output.find(message), std::string::npos) << arguments << "\n" << r.output;
  }
}

TEST(GenerationBenchmark, RunsOnTheCpuWithRandomWeights) {
  for (const char* kind : kKinds) {
    const ProcessResult r = run_generate("--benchmark --config " + config_path(kind) + " --device cpu --lengths 4 --lengths 8 --batch-size 2");
    EXPECT_EQ(r.status, 0) << kind << "\n" << r.output;
    EXPECT_NE(r.output.find("ms/token"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("floor per step"), std::string::npos) << r.output;
  }
}

}  // namespace
}  // namespace densessm
