// The data loader: block contents, determinism, rank partition, resume, epochs and its errors.
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "densessm/data_loader.h"
#include "densessm/token_shard.h"
#include "test_helpers.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kVocab = 1000;
// The token at position s of the stream.
int64_t token_at(uint64_t s) { return static_cast<int64_t>((s * 7 + s / 13) % kVocab); }

class Loader : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("densessm-loader-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    // 3 train shards of uneven sizes (blocks straddle shard ends) and 1 validation shard.
    uint64_t s = 0;
    std::vector<std::string> train;
    for (uint64_t size : {1000u, 357u, 2001u}) {
      train.push_back("train-" + std::to_string(train.size()) + ".bin");
      ShardWriter w((dir_ / train.back()).string(), kVocab);
      for (uint64_t i = 0; i < size; ++i, ++s) w.append({static_cast<int32_t>(token_at(s))});
      w.commit();
    }
    ShardWriter v((dir_ / "val-0.bin").string(), kVocab);
    for (int i = 0; i < 300; ++i) v.append({static_cast<int32_t>(i % kVocab)});
    v.commit();
    std::ofstream((dir_ / "dataset.json").string())
        << nlohmann::json{{"vocab_size", kVocab}, {"train_shards", train}, {"validation_shards", {"val-0.bin"}}}.dump();
  }
  void TearDown() override { fs::remove_all(dir_); }

  LoaderOptions options(int64_t batch, int64_t block, int64_t rank = 0, int64_t world = 1) const {
    LoaderOptions o;
    o.dataset_dir = dir_.string();
    o.batch_size = batch;
    o.block_size = block;
    o.rank = rank;
    o.world_size = world;
    return o;
  }
  fs::path dir_;
};

// The block index a row holds (rows are block k: stream [k T, k T + T]).
int64_t block_of(const torch::Tensor& row, int64_t T) {
  for (int64_t k = 0;; ++k) {
    bool match = true;
    for (int64_t i = 0; i <= T && match; ++i) match = row[i].item<int64_t>() == token_at(k * T + i);
    if (match) return k;
    if (k * T > 4000) return -1;
  }
}

TEST_F(Loader, BatchesAreBlocksOfTheTokenStream) {
  DataLoader loader(options(4, 64));
  EXPECT_EQ(loader.num_tokens(), 3358u);
  EXPECT_EQ(loader.num_blocks(), 3357u / 64);
  EXPECT_EQ(loader.batches_per_epoch(), loader.num_blocks() / 4);
  std::set<int64_t> seen;
  for (uint64_t b = 0; b < loader.batches_per_epoch(); ++b) {
    auto batch = loader.next();
    ASSERT_EQ(batch.sizes(), torch::IntArrayRef({4, 65}));
    ASSERT_EQ(batch.scalar_type(), torch::kLong);
    for (int64_t r = 0; r < 4; ++r) {
      const int64_t k = block_of(batch[r], 64);
      ASSERT_GE(k, 0) << "row is not a block of the stream";
      EXPECT_TRUE(seen.insert(k).second) << "block " << k << " twice in an epoch";
    }
  }
  EXPECT_EQ(loader.position(), (LoaderPosition{1, 0}));
}

TEST_F(Loader, SameSeedSameBatchesOtherSeedOtherOrder) {
  auto take = [&](uint64_t seed, int n) {
    auto o = options(2, 32);
    o.seed = seed;
    DataLoader loader(o);
    std::vector<torch::Tensor> batches;
    for (int i = 0; i < n; ++i) batches.push_back(loader.next());
    return torch::cat(batches);
  };
  EXPECT_TRUE(torch::equal(take(7, 30), take(7, 30)));
  EXPECT_FALSE(torch::equal(take(7, 30), take(8, 30)));
}

TEST_F(Loader, RanksSplitTheGlobalBatchOfOneRank) {
  DataLoader whole(options(6, 16));
  DataLoader rank0(options(3, 16, 0, 2)), rank1(options(3, 16, 1, 2));
  for (int i = 0; i < 2 * static_cast<int>(whole.batches_per_epoch()) + 3; ++i) {  // across epochs
    EXPECT_TRUE(torch::equal(whole.next(), torch::cat({rank0.next(), rank1.next()}))) << "batch " << i;
  }
}

TEST_F(Loader, ResumesFromASavedPosition) {
  for (int64_t prefetch : {0, 3}) {
    auto o = options(2, 40);
    o.prefetch = prefetch;
    DataLoader straight(o);
    std::vector<torch::Tensor> expected;
    for (int i = 0; i < 70; ++i) expected.push_back(straight.next());
    DataLoader first(o);
    for (int i = 0; i < 45; ++i) first.next();
    const LoaderPosition saved = first.position();
    DataLoader resumed(o);
    resumed.set_position(saved);
    for (int i = 45; i < 70; ++i) EXPECT_TRUE(torch::equal(resumed.next(), expected[i])) << "batch " << i;
  }
}

TEST_F(Loader, ValidationInOrder) {
  auto o = options(2, 10);
  o.split = "validation";
  o.shuffle = false;
  DataLoader loader(o);
  auto batch = loader.next();
  for (int64_t i = 0; i <= 10; ++i) EXPECT_EQ(batch[1][i].item<int64_t>(), 10 + i);
}

TEST_F(Loader, Errors) {
  auto expect_error = [](const LoaderOptions& o, const std::string& part) {
    try {
      DataLoader loader(o);
      ADD_FAILURE() << "no error";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  auto o = options(2, 64);
  o.expected_vocab = 32000;
  expect_error(o, "vocabulary of 1000 tokens, the model 32000");
  expect_error(options(64, 64), "fewer than one global batch");
  expect_error(options(2, 64, 2, 2), "rank 2 is outside world size 2");
  auto missing = options(2, 64);
  missing.dataset_dir = (dir_ / "nothing").string();
  expect_error(missing, "dataset.json: cannot open");
  DataLoader loader(options(2, 64));
  EXPECT_THROW(loader.set_position({0, loader.batches_per_epoch()}), std::runtime_error);
  fs::resize_file(dir_ / "train-1.bin", 100);
  expect_error(options(2, 64), "train-1.bin: truncated or corrupt");
}

}  // namespace
}  // namespace densessm
