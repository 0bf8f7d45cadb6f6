// Linking: the torch wheel's libtorch.so exports a broken std::filesystem; programs that link DenseSSM
// must get libstdc++'s (CMakeLists.txt puts libstdc++ first). These calls crashed before that fix.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace {

namespace fs = std::filesystem;

TEST(Linking, StdFilesystemWorksNextToLibTorch) {
  auto x = torch::ones({2, 2}).sum();  // LibTorch loaded and used in this process
  const fs::path dir = fs::temp_directory_path() / ("densessm-linking-" + std::to_string(::getpid()));
  fs::create_directories(dir / "a" / "b");
  std::ofstream(dir / "a" / "b" / "f.bin") << "0123456789";
  fs::resize_file(dir / "a" / "b" / "f.bin", 4);
  EXPECT_EQ(fs::file_size(dir / "a" / "b" / "f.bin"), 4u);
  EXPECT_EQ(fs::remove_all(dir), 4u);
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_EQ(x.item<float>(), 4.0f);
}

}  // namespace
