// Token shards: round trips in both widths, atomic commit, and a clear error for each kind of bad file.
#include <filesystem>
#include <fstream>

#include "densessm/token_shard.h"
#include "test_helpers.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;

class TokenShards : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("densessm-shards-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::vector<int32_t> write(const std::string& name, int64_t vocab, size_t count) {
    std::vector<int32_t> ids(count);
    for (size_t i = 0; i < count; ++i) ids[i] = static_cast<int32_t>((i * 7919 + 13) % vocab);
    ShardWriter writer(path(name), vocab);
    writer.append(ids.data(), count / 2);  // two appends: the writer's buffering must not matter
    writer.append(ids.data() + count / 2, count - count / 2);
    writer.commit();
    return ids;
  }

  // Expects TokenShard::open to fail with a message containing `part`.
  void expect_open_error(const std::string& file, const std::string& part, int64_t vocab = 0) {
    try {
      TokenShard::open(file, vocab);
      ADD_FAILURE() << "opened " << file;
    } catch (const ShardError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    }
  }

  fs::path dir_;
};

TEST_F(TokenShards, RoundTripInBothWidths) {
  for (auto [vocab, bytes] : {std::pair<int64_t, int>{32000, 2}, {65536, 2}, {65537, 4}, {150000, 4}}) {
    const auto ids = write("s.bin", vocab, 300'001);
    const auto shard = TokenShard::open(path("s.bin"), vocab);
    EXPECT_EQ(shard.token_bytes(), bytes);
    EXPECT_EQ(shard.size(), ids.size());
    EXPECT_EQ(fs::file_size(path("s.bin")), 64 + ids.size() * bytes);
    std::vector<int64_t> out(1000);
    shard.read(123'456, out.size(), out.data());
    for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], ids[123'456 + i]);
    EXPECT_EQ(shard[ids.size() - 1], ids.back());
    EXPECT_THROW(shard[ids.size()], ShardError);
    EXPECT_THROW(shard.read(ids.size() - 1, 2, out.data()), ShardError);
  }
}

TEST_F(TokenShards, NothingAppearsBeforeCommitAndAnAbandonedWriteLeavesNothing) {
  {
    ShardWriter writer(path("a.bin"), 100);
    writer.append({1, 2, 3});
    EXPECT_FALSE(fs::exists(path("a.bin")));
  }
  EXPECT_TRUE(fs::is_empty(dir_)) << "the temporary file was left behind";
  write("a.bin", 100, 10);
  EXPECT_EQ(TokenShard::open(path("a.bin")).size(), 10u);
}

TEST_F(TokenShards, RejectsOutOfRangeIds) {
  ShardWriter writer(path("b.bin"), 100);
  EXPECT_THROW(writer.append({5, 100}), ShardError);
  EXPECT_THROW(writer.append({-1}), ShardError);
}

TEST_F(TokenShards, ClearErrorsForBadFiles) {
  expect_open_error(path("missing.bin"), "cannot open");
  write("good.bin", 1000, 100);
  expect_open_error(path("good.bin"), "does not match the expected 32000", 32000);

  auto corrupt = [&](const std::string& name, size_t offset, std::vector<uint8_t> bytes) {
    fs::copy_file(path("good.bin"), path(name));
    std::fstream f(path(name), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return path(name);
  };
  expect_open_error(corrupt("magic.bin", 0, {'X'}), "bad magic");
  expect_open_error(corrupt("version.bin", 8, {9}), "version 9");
  expect_open_error(corrupt("width.bin", 12, {3}), "token width 3");
  expect_open_error(corrupt("count.bin", 24, {101}), "truncated or corrupt");

  fs::copy_file(path("good.bin"), path("short.bin"));
  fs::resize_file(path("short.bin"), 64 + 2 * 99);
  expect_open_error(path("short.bin"), "truncated or corrupt");
  fs::resize_file(path("short.bin"), 10);
  expect_open_error(path("short.bin"), "shorter than the header");
}

}  // namespace
}  // namespace densessm
