#include "generate/text_stream.h"

#include <algorithm>

namespace densessm {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD: an incomplete byte-fallback character

bool ends_with(const std::string& text, std::string_view tail) {
  return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

// Length of the longest end of `text` that is a proper beginning of some stop string.
size_t pending_stop_prefix(const std::string& text, const std::vector<std::string>& stops) {
  size_t longest = 0;
  for (const std::string& stop : stops) {
    for (size_t n = std::min(stop.size() - 1, text.size()); n > longest; --n) {
      if (text.compare(text.size() - n, n, stop, 0, n) == 0) {
        longest = n;
        break;
      }
    }
  }
  return longest;
}

}  // namespace

std::string decode_continuation(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                                const std::vector<int32_t>& generated) {
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), generated.begin(), generated.end());
  const std::string prompt_text = tokenizer.decode(prompt), text = tokenizer.decode(all);
  if (text.compare(0, prompt_text.size(), prompt_text) == 0) return text.substr(prompt_text.size());
  return tokenizer.decode(generated);  // the prompt's text changed with what followed: no clean cut
}

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<int32_t> prompt, std::vector<std::string> stop_strings)
    : tokenizer_(tokenizer), prompt_(std::move(prompt)), stop_strings_(std::move(stop_strings)) {}

std::string TextStream::push(int32_t token) {
  if (stopped_) return {};
  generated_.push_back(token);
  text_ = decode_continuation(tokenizer_, prompt_, generated_);
  size_t cut = std::string::npos;
  for (const std::string& stop : stop_strings_) cut = std::min(cut, text_.find(stop));
  if (cut != std::string::npos) {
    text_.resize(cut);
    stopped_ = true;
    return finish();
  }
  if (ends_with(text_, kReplacement)) return {};
  const size_t ready = text_.size() - pending_stop_prefix(text_, stop_strings_);
  if (ready <= printed_) return {};
  std::string out = text_.substr(printed_, ready - printed_);
  printed_ = ready;
  return out;
}

std::string TextStream::finish() {
  if (printed_ >= text_.size()) return {};
  std::string out = text_.substr(printed_);
  printed_ = text_.size();
  return out;
}

}  // namespace densessm
