// Token ids -> printable text, one token at a time, for one sequence.
//
// sentencepiece decodes a piece differently at the start of a text (its leading space goes), so the
// continuation is decoded together with its prompt and the prompt's text cut off. Text is held back while
// it ends in an incomplete UTF-8 character (byte-fallback pieces decode to U+FFFD until the character is
// complete) or in the beginning of a stop string; a stop string that appears ends the text before it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "densessm/tokenizer.h"

namespace densessm {

/// The text of `generated` as it reads after `prompt` (the prompt's own text cut off).
std::string decode_continuation(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                                const std::vector<int32_t>& generated);

class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, std::vector<int32_t> prompt, std::vector<std::string> stop_strings);

  /// Adds a generated token; returns the text that became ready to print (often one word piece).
  std::string push(int32_t token);
  /// The held-back rest, once the sequence has ended.
  std::string finish();
  /// Whether a stop string has appeared (nothing more will be printed).
  bool stopped() const { return stopped_; }
  /// The whole continuation so far (cut before a stop string).
  const std::string& text() const { return text_; }

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> prompt_, generated_;
  std::vector<std::string> stop_strings_;
  std::string text_;          // the continuation's text
  size_t printed_ = 0;        // bytes of text_ already returned
  bool stopped_ = false;
};

}  // namespace densessm
