// TensorBoard event files: what the writer puts down reads back, record by record, with valid checksums.
#include <filesystem>

#include "event_file.h"
#include "test_helpers.h"
#include "train/tensorboard.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;

TEST(TensorBoard, ScalarsReadBackWithValidChecksums) {
  const fs::path dir = fs::temp_directory_path() / ("densessm-tb-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  std::string path;
  {
    TensorBoardWriter writer((dir / "tensorboard").string());
    path = writer.path();
    EXPECT_NE(fs::path(path).filename().string().find("events.out.tfevents."), std::string::npos);
    writer.add_scalar("train/loss", 2.5, 10);
    writer.add_scalar("validation/perplexity", 1e5, 3000000000LL);  // a step past 32 bits
    writer.add_scalar(std::string(200, 'x'), -0.125, 0);           // a tag longer than one varint byte
    writer.flush();
    // Flushed: readable while the writer is still open, as a live TensorBoard reads it.
    EXPECT_EQ(testing::read_event_file(path).size(), 4u);
  }
  const auto events = testing::read_event_file(path);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_TRUE(events[0].values.empty());
  EXPECT_GT(events[0].wall_time, 1.7e9);  // seconds since 1970, after 2023

  EXPECT_EQ(events[1].step, 10);
  ASSERT_EQ(events[1].values.size(), 1u);
  EXPECT_EQ(events[1].values[0].first, "train/loss");
  EXPECT_EQ(events[1].values[0].second, 2.5f);
  EXPECT_GE(events[1].wall_time, events[0].wall_time);

  EXPECT_EQ(events[2].step, 3000000000LL);
  EXPECT_EQ(events[2].values.at(0).first, "validation/perplexity");
  EXPECT_EQ(events[2].values.at(0).second, 1e5f);
  EXPECT_EQ(events[3].values.at(0).first, std::string(200, 'x'));
  EXPECT_EQ(events[3].values.at(0).second, -0.125f);
  fs::remove_all(dir);
}

TEST(TensorBoard, AFlippedByteFailsTheChecksum) {
  const fs::path dir = fs::temp_directory_path() / ("densessm-tb-crc-" + std::to_string(::getpid()));
  std::string path;
  {
    TensorBoardWriter writer(dir.string());
    path = writer.path();
    writer.add_scalar("train/loss", 1.0, 1);
  }
  ASSERT_EQ(testing::read_event_file(path).size(), 2u);
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekp(static_cast<std::streamoff>(fs::file_size(path) - 6));  // inside the last event's value
  file.put('\x7f');
  file.close();
  EXPECT_THROW(testing::read_event_file(path), std::runtime_error);
  fs::remove_all(dir);
}

TEST(TensorBoard, AnUnwritableFolderIsAClearError) {
  try {
    TensorBoardWriter writer("/proc/densessm-no-such-folder");
    ADD_FAILURE() << "created an event file under /proc";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("densessm-no-such-folder"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace densessm
