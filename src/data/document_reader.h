// Streams documents out of one input file, whatever its format.
#pragma once

#include <memory>
#include <optional>
#include <string>

namespace densessm {

class DocumentReader {
 public:
  virtual ~DocumentReader() = default;
  /// The next non-empty document, or nothing at the end of the file.
  virtual std::optional<std::string> next() = 0;
  /// Bytes read from the file so far (compressed bytes for .zst).
  virtual uint64_t bytes_read() const = 0;
};

/// Chooses the format by extension: .jsonl.zst, .jsonl, anything else is text split by `txt_documents`.
std::unique_ptr<DocumentReader> open_documents(const std::string& path, const std::string& text_field,
                                               const std::string& txt_documents);

}  // namespace densessm
