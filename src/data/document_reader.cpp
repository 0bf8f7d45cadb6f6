#include "data/document_reader.h"

#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <vector>

#include <nlohmann/json.hpp>
#include <zstd.h>

namespace densessm {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Lines of a plain or zstd-compressed file.
class LineSource {
 public:
  LineSource(const std::string& path, bool zstd) : path_(path), zstd_(zstd) {
    file_ = std::fopen(path.c_str(), "rb");
    if (!file_) throw std::runtime_error(path + ": cannot open");
    if (zstd_) {
      stream_ = ZSTD_createDStream();
      ZSTD_initDStream(stream_);
      in_buffer_.resize(ZSTD_DStreamInSize());
    } else {
      in_buffer_.resize(1 << 20);
    }
  }
  ~LineSource() {
    if (stream_) ZSTD_freeDStream(stream_);
    if (file_) std::fclose(file_);
  }
  LineSource(const LineSource&) = delete;
  LineSource& operator=(const LineSource&) = delete;

  std::optional<std::string> next_line() {
    for (;;) {
      const auto newline = pending_.find('\n', scan_from_);
      if (newline != std::string::npos) {
        std::string line = pending_.substr(0, newline);
        pending_.erase(0, newline + 1);
        scan_from_ = 0;
        ++line_number_;
        return line;
      }
      scan_from_ = pending_.size();
      if (!fill()) {
        if (pending_.empty()) return std::nullopt;
        std::string line = std::move(pending_);
        pending_.clear();
        scan_from_ = 0;
        ++line_number_;
        return line;
      }
    }
  }
  uint64_t bytes_read() const { return bytes_read_; }
  uint64_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

 private:
  // Appends more decoded bytes to pending_; false at the end of the input.
  bool fill() {
    if (!zstd_) {
      const size_t n = std::fread(in_buffer_.data(), 1, in_buffer_.size(), file_);
      if (n == 0) {
        if (std::ferror(file_)) throw std::runtime_error(path_ + ": read error");
        return false;
      }
      bytes_read_ += n;
      pending_.append(in_buffer_.data(), n);
      return true;
    }
    std::vector<char> out(ZSTD_DStreamOutSize());
    for (;;) {
      if (input_.pos == input_.size) {
        const size_t n = std::fread(in_buffer_.data(), 1, in_buffer_.size(), file_);
        if (n == 0) {
          if (std::ferror(file_)) throw std::runtime_error(path_ + ": read error");
          if (last_result_ != 0) throw std::runtime_error(path_ + ": truncated zstd stream");
          return false;
        }
        bytes_read_ += n;
        input_ = {in_buffer_.data(), n, 0};
      }
      ZSTD_outBuffer output = {out.data(), out.size(), 0};
      last_result_ = ZSTD_decompressStream(stream_, &output, &input_);
      if (ZSTD_isError(last_result_)) {
        throw std::runtime_error(path_ + ": corrupt zstd data: " + ZSTD_getErrorName(last_result_));
      }
      if (output.pos > 0) {
        pending_.append(out.data(), output.pos);
        return true;
      }
    }
  }

  std::string path_;
  bool zstd_;
  std::FILE* file_ = nullptr;
  ZSTD_DStream* stream_ = nullptr;
  ZSTD_inBuffer input_{nullptr, 0, 0};
  size_t last_result_ = 0;
  std::vector<char> in_buffer_;
  std::string pending_;
  size_t scan_from_ = 0;
  uint64_t bytes_read_ = 0, line_number_ = 0;
};

class JsonlReader : public DocumentReader {
 public:
  JsonlReader(const std::string& path, bool zstd, std::string field) : lines_(path, zstd), field_(std::move(field)) {}
  std::optional<std::string> next() override {
    while (auto line = lines_.next_line()) {
      if (line->find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json object;
      try {
        object = nlohmann::json::parse(*line);
      } catch (const nlohmann::json::parse_error& e) {
        throw std::runtime_error(where() + ": malformed JSON: " + e.what());
      }
      auto it = object.is_object() ? object.find(field_) : object.end();
      if (it == object.end()) throw std::runtime_error(where() + ": no \"" + field_ + "\" field");
      if (!it->is_string()) throw std::runtime_error(where() + ": field \"" + field_ + "\" is not a string");
      std::string text = it->get<std::string>();
      if (!text.empty()) return text;
    }
    return std::nullopt;
  }
  uint64_t bytes_read() const override { return lines_.bytes_read(); }

 private:
  std::string where() const { return lines_.path() + ":" + std::to_string(lines_.line_number()); }
  LineSource lines_;
  std::string field_;
};

class TextReader : public DocumentReader {
 public:
  TextReader(const std::string& path, std::string mode) : lines_(path, false), mode_(std::move(mode)) {}
  std::optional<std::string> next() override {
    std::string document;
    while (auto line = lines_.next_line()) {
      if (!line->empty() && line->back() == '\r') line->pop_back();
      const bool blank = line->find_first_not_of(" \t") == std::string::npos;
      if (mode_ == "line") {
        if (!blank) return line;
        continue;
      }
      if (mode_ == "paragraph" && blank) {
        if (!document.empty()) return document;
        continue;
      }
      if (!document.empty()) document += '\n';
      document += *line;
    }
    if (document.find_first_not_of(" \t\n") == std::string::npos) return std::nullopt;
    return document;
  }
  uint64_t bytes_read() const override { return lines_.bytes_read(); }

 private:
  LineSource lines_;
  std::string mode_;
};

}  // namespace

std::unique_ptr<DocumentReader> open_documents(const std::string& path, const std::string& text_field,
                                               const std::string& txt_documents) {
  if (ends_with(path, ".jsonl.zst") || ends_with(path, ".json.zst")) return std::make_unique<JsonlReader>(path, true, text_field);
  if (ends_with(path, ".jsonl") || ends_with(path, ".json")) return std::make_unique<JsonlReader>(path, false, text_field);
  if (txt_documents != "paragraph" && txt_documents != "line" && txt_documents != "file") {
    throw std::runtime_error("text documents must be split by paragraph, line or file, got '" + txt_documents + "'");
  }
  return std::make_unique<TextReader>(path, txt_documents);
}

}  // namespace densessm
