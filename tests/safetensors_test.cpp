// safetensors: bit-exact round trips of every dtype, sharded checkpoints, and corrupt files (a table of
// hand-made ones and random mutations) that must each give a SafetensorsError, never a crash.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "densessm/safetensors.h"
#include "test_helpers.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("densessm-safetensors-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    torch::manual_seed(7);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// A file of the given header text and `data_bytes` zero bytes, with the header length stated as `length`
// (default: the true one).
std::vector<uint8_t> make_file(const std::string& header, size_t data_bytes, uint64_t length = UINT64_MAX) {
  if (length == UINT64_MAX) length = header.size();
  std::vector<uint8_t> bytes(8);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(length >> (8 * i));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.resize(bytes.size() + data_bytes, 0);
  return bytes;
}

torch::Tensor random_tensor(torch::ScalarType dtype, std::vector<int64_t> shape) {
  if (dtype == torch::kBool) return torch::rand(shape) > 0.5;
  if (c10::isFloatingType(dtype)) return torch::randn(shape, torch::kDouble).to(dtype);
  return torch::randint(-100, 100, shape, torch::kLong).to(dtype).view(shape);
}

TEST_F(SafetensorsTest, EveryDtypeRoundTripsBitExactly) {
  NamedTensors tensors;
  for (auto dtype : {torch::kDouble, torch::kFloat, torch::kHalf, torch::kBFloat16, torch::kLong, torch::kInt,
                     torch::kShort, torch::kChar, torch::kBool}) {
    tensors.emplace_back(std::string("t_") + c10::toString(dtype), random_tensor(dtype, {3, 5}));
  }
  tensors.emplace_back("bytes", torch::randint(0, 256, {7}, torch::kLong).to(torch::kByte));  // odd size, then...
  tensors.emplace_back("scalar", torch::tensor(2.5, torch::kFloat).reshape({}));                // ...a 4-byte one
  tensors.emplace_back("empty", torch::zeros({0, 4}, torch::kHalf));
  tensors.emplace_back("strided", torch::randn({4, 6}).t());  // written contiguous
  write_safetensors(path("a.safetensors"), tensors, {{"format", "pt"}, {"note", "x"}});

  SafetensorsFile file(path("a.safetensors"));
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("note"), "x");
  ASSERT_EQ(file.names().size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    const auto got = file.tensor(name);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(torch::equal(got, expected)) << name;  // bit-exact: equal also for the rounded low-precision types
    // Every tensor starts aligned to its element size in an 8-byte aligned data area.
    EXPECT_EQ(file.entry(name).begin % expected.element_size(), 0u) << name;
  }
  const auto bytes = read_bytes(path("a.safetensors"));
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = header << 8 | bytes[i];
  EXPECT_EQ((8 + header) % 8, 0u);
  // Nothing else is left behind (the temporary file was renamed).
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(SafetensorsTest, ShardedCheckpointRoundTrips) {
  NamedTensors tensors;
  for (int i = 0; i < 7; ++i) tensors.emplace_back("layer." + std::to_string(i), torch::randn({16, 8 + i}));
  tensors.emplace_back("big", torch::randn({100, 10}));  // larger than a shard: a shard of its own
  const auto written = write_safetensors_checkpoint(dir_.string(), tensors, {{"format", "pt"}}, 1200);
  ASSERT_GT(written.size(), 3u);
  EXPECT_TRUE(fs::exists(path("model.safetensors.index.json")));
  const json index = json::parse(std::ifstream(path("model.safetensors.index.json")));
  EXPECT_EQ(index["weight_map"].size(), tensors.size());
  EXPECT_TRUE(index["metadata"]["total_size"].is_number_unsigned());

  SafetensorsCheckpoint checkpoint(dir_.string());
  EXPECT_EQ(checkpoint.files().size(), written.size() - 1);
  EXPECT_EQ(checkpoint.names().size(), tensors.size());
  for (const auto& [name, expected] : tensors) EXPECT_TRUE(torch::equal(checkpoint.tensor(name), expected)) << name;
  for (const std::string& file : checkpoint.files()) {
    uint64_t data = 0;
    SafetensorsFile shard(file);
    for (const auto& name : shard.names()) data += shard.entry(name).end - shard.entry(name).begin;
    EXPECT_TRUE(data <= 1200 || shard.names().size() == 1) << file;
  }
}

TEST_F(SafetensorsTest, SingleFileCheckpoint) {
  const NamedTensors tensors = {{"w", torch::randn({3, 3})}};
  const auto written = write_safetensors_checkpoint(dir_.string(), tensors);
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(fs::path(written[0]).filename(), "model.safetensors");
  EXPECT_TRUE(torch::equal(SafetensorsCheckpoint(dir_.string()).tensor("w"), tensors[0].second));
  EXPECT_THROW(SafetensorsCheckpoint(path("nowhere")), SafetensorsError);
}

struct CorruptCase {
  std::string name;
  std::vector<uint8_t> bytes;
  std::string expected;  // part of the error message
};

std::string entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"dtype": ")" + dtype + R"(", "shape": )" + shape + R"(, "data_offsets": )" + offsets + "}";
}

std::vector<CorruptCase> corrupt_cases() {
  const std::string good = R"({"a": )" + entry("F32", "[2]", "[0, 8]") + "}";
  std::vector<uint8_t> truncated = make_file(good, 8);
  truncated.resize(truncated.size() - 3);
  std::vector<uint8_t> trailing = make_file(good, 12);
  return {
      {"empty file", {}, "too short"},
      {"truncated header length", {1, 0, 0}, "too short"},
      {"header length beyond the file", make_file(good, 8, 1000), "beyond the end of the file"},
      {"header length near 2^64", make_file(good, 8, UINT64_MAX - 3), "beyond the end of the file"},
      {"invalid JSON", make_file(R"({"a": {"dtype": "F32", )", 8), "not valid JSON"},
      {"header not an object", make_file("[1, 2]", 0), "not a JSON object"},
      {"entry not an object", make_file(R"({"a": 3})", 0), "tensor \"a\""},
      {"missing dtype", make_file(R"({"a": {"shape": [2], "data_offsets": [0, 8]}})", 8), "dtype"},
      {"unknown dtype", make_file(R"({"a": )" + entry("F8_E4M3", "[2]", "[0, 2]") + "}", 2), "unsupported dtype \"F8_E4M3\""},
      {"negative shape", make_file(R"({"a": )" + entry("F32", "[-2]", "[0, 8]") + "}", 8), "non-negative"},
      {"fractional shape", make_file(R"({"a": )" + entry("F32", "[1.5]", "[0, 8]") + "}", 8), "non-negative integers"},
      {"shape overflows", make_file(R"({"a": )" + entry("F32", "[4611686018427387904, 8]", "[0, 8]") + "}", 8), "overflows"},
      {"bytes overflow", make_file(R"({"a": )" + entry("F64", "[4611686018427387904]", "[0, 8]") + "}", 8), "overflows"},
      {"offsets outside the file", make_file(R"({"a": )" + entry("F32", "[2]", "[1000, 1008]") + "}", 8), "beyond the data area"},
      {"begin after end", make_file(R"({"a": )" + entry("F32", "[0]", "[8, 0]") + "}", 8), "begin after end"},
      {"one offset", make_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", 8), "data_offsets"},
      {"negative offset", make_file(R"({"a": )" + entry("F32", "[2]", "[-8, 0]") + "}", 8), "data_offsets"},
      {"byte count differs from the shape", make_file(R"({"a": )" + entry("F32", "[3]", "[0, 8]") + "}", 8), "needs 12"},
      {"overlapping offsets",
       make_file(R"({"a": )" + entry("F32", "[2]", "[0, 8]") + R"(, "b": )" + entry("F32", "[2]", "[4, 12]") + "}", 12), "overlaps"},
      {"gap between tensors",
       make_file(R"({"a": )" + entry("F32", "[1]", "[0, 4]") + R"(, "b": )" + entry("F32", "[1]", "[8, 12]") + "}", 12), "gap"},
      {"truncated data", truncated, "beyond the data area"},
      {"trailing bytes", trailing, "no tensor claims"},
      {"metadata not strings", make_file(R"({"__metadata__": {"format": 1}})", 0), "__metadata__"},
      {"deeply nested JSON", make_file(R"({"a": )" + std::string(200000, '[') + std::string(200000, ']') + "}", 0), "tensor \"a\""},
  };
}

TEST_F(SafetensorsTest, CorruptFilesGiveErrorsNamingFileAndProblem) {
  for (const CorruptCase& c : corrupt_cases()) {
    SCOPED_TRACE(c.name);
    write_bytes(path("bad.safetensors"), c.bytes);
    try {
      SafetensorsFile file(path("bad.safetensors"));
      ADD_FAILURE() << "accepted";
    } catch (const SafetensorsError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(path("bad.safetensors")), std::string::npos) << what;
      EXPECT_NE(what.find(c.expected), std::string::npos) << what;
    }
  }
}

TEST_F(SafetensorsTest, OversizedHeaderIsRefused) {
  // A sparse file: the header length fits in the file but exceeds the 100 MB limit.
  auto bytes = make_file("{}", 0, 150'000'000);
  write_bytes(path("huge.safetensors"), bytes);
  fs::resize_file(path("huge.safetensors"), 200'000'000);
  EXPECT_THROW(
      {
        try {
          SafetensorsFile file(path("huge.safetensors"));
        } catch (const SafetensorsError& e) {
          EXPECT_NE(std::string(e.what()).find("100 MB"), std::string::npos) << e.what();
          throw;
        }
      },
      SafetensorsError);
}

TEST_F(SafetensorsTest, BadIndexesGiveErrors) {
  const NamedTensors tensors = {{"a", torch::randn({4})}, {"b", torch::randn({4})}};
  write_safetensors(path("shard.safetensors"), tensors);
  auto index_with = [&](const json& weight_map) {
    std::ofstream(path("model.safetensors.index.json")) << json{{"metadata", json::object()}, {"weight_map", weight_map}}.dump();
  };
  auto expect_error = [&](const std::string& part) {
    try {
      SafetensorsCheckpoint checkpoint(dir_.string());
      ADD_FAILURE() << "accepted an index; expected: " << part;
    } catch (const SafetensorsError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  index_with({{"a", "shard.safetensors"}, {"b", "shard.safetensors"}});
  EXPECT_EQ(SafetensorsCheckpoint(dir_.string()).names().size(), 2u);
  index_with({{"a", "shard.safetensors"}});
  expect_error("\"b\" is not mapped");
  index_with({{"a", "shard.safetensors"}, {"b", "shard.safetensors"}, {"c", "shard.safetensors"}});
  expect_error("\"c\" is not in its shard");
  index_with({{"a", "../shard.safetensors"}, {"b", "shard.safetensors"}});
  expect_error("not a file name in the folder");
  index_with({{"a", "missing.safetensors"}, {"b", "shard.safetensors"}});
  expect_error("missing.safetensors: cannot open");
  index_with({{"a", 3}});
  expect_error("does not name a file");
  std::ofstream(path("model.safetensors.index.json")) << "{\"weight_map\": ";
  expect_error("not valid JSON");
}

// libFuzzer-style: random byte mutations of a valid file (mostly in the header, where parsing happens),
// random truncations and random header lengths. Each must load cleanly (and then read every tensor)
// or throw SafetensorsError; anything else (a crash, another exception, a sanitizer report) fails.
TEST_F(SafetensorsTest, RandomMutationsLoadOrFailCleanly) {
  const NamedTensors tensors = {{"weight", torch::randn({3, 4})},
                                {"bias", torch::randn({4}).to(torch::kHalf)},
                                {"ids", torch::arange(5)},
                                {"flag", torch::ones({2}, torch::kBool)}};
  write_safetensors(path("valid.safetensors"), tensors, {{"format", "pt"}});
  const auto valid = read_bytes(path("valid.safetensors"));
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = header << 8 | valid[i];

  std::mt19937_64 rng(20240312);
  auto uniform = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
  const char interesting[] = "{}[]\",:0123456789-e.FIU";
  int loaded = 0, rejected = 0;
  for (int iteration = 0; iteration < 3000; ++iteration) {
    auto bytes = valid;
    const auto kind = uniform(10);
    if (kind == 0) {
      bytes.resize(uniform(bytes.size()));  // truncate
    } else if (kind == 1) {
      const uint64_t length = uniform(2) ? uniform(bytes.size() * 2) : rng();
      for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(length >> (8 * i));
    } else {
      const auto edits = 1 + uniform(4);
      for (uint64_t e = 0; e < edits; ++e) {
        const size_t at = uniform(10) < 8 ? 8 + uniform(header) : uniform(bytes.size());
        bytes[at] = uniform(2) ? static_cast<uint8_t>(interesting[uniform(sizeof(interesting) - 1)]) : static_cast<uint8_t>(rng());
      }
    }
    write_bytes(path("fuzz.safetensors"), bytes);
    try {
      SafetensorsFile file(path("fuzz.safetensors"));
      for (const auto& name : file.names()) (void)file.tensor(name).sum();
      ++loaded;
    } catch (const SafetensorsError&) {
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << iteration << ": not a SafetensorsError: " << e.what();
    }
  }
  EXPECT_GT(loaded, 0);    // harmless mutations (data bytes, whitespace) still load
  EXPECT_GT(rejected, 1000);
}

}  // namespace
}  // namespace densessm
