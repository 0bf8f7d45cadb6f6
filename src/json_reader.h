// Reads one JSON object into a struct: each read() consumes a key, and finish() rejects any key nobody
// consumed, so a typo in a config never passes silently. Errors read "<source>: <key path>: <reason>"
// and are ConfigError. Used by the model config (src/config.cpp) and the run config (src/train).
#pragma once

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "densessm/config.h"

namespace densessm::json_config {

using json = nlohmann::json;

inline std::string type_name(const json& value) {
  if (value.is_number_integer()) return "integer";
  if (value.is_number_float()) return "number";
  return value.type_name();
}

/// The whole text of a config file; a ConfigError "<path>: cannot open the <what>" when unreadable.
inline std::string read_config_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open the " + what);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Parses JSON text; malformed text is a ConfigError naming `source`.
inline json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw ConfigError(source + ": malformed JSON: " + e.what());
  }
}

/// A JSON file: ConfigError naming the file when it cannot be read or is malformed.
inline json read_json_file(const std::string& path, const std::string& what) {
  return parse_json(read_config_file(path, what), path);
}

class ObjectReader {
 public:
  ObjectReader(const json& object, std::string source, std::string path)
      : object_(object), source_(std::move(source)), path_(std::move(path)) {
    if (!object_.is_object()) fail(path_.empty() ? "<root>" : path_, "expected a JSON object, got " + type_name(object_));
  }

  [[noreturn]] void fail(const std::string& key, const std::string& reason) const {
    throw ConfigError(source_ + ": " + key + ": " + reason);
  }

  std::string key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  bool has(const std::string& key) const { return object_.contains(key); }

  void read(const std::string& key, int64_t& out) {
    const json* value = take(key);
    if (!value) return;
    if (value->is_number_integer()) {
      out = value->get<int64_t>();
    } else if (value->is_number_float() && value->get<double>() == static_cast<double>(static_cast<int64_t>(value->get<double>()))) {
      out = static_cast<int64_t>(value->get<double>());  // 2.0 is an integer, 2.5 is not
    } else {
      fail(key_path(key), "expected an integer, got " + type_name(*value) + " " + value->dump());
    }
  }

  void read(const std::string& key, uint64_t& out) {
    int64_t value = 0;
    if (!has(key)) return;
    read(key, value);
    if (value < 0) fail(key_path(key), "must not be negative, got " + std::to_string(value));
    out = static_cast<uint64_t>(value);
  }

  void read(const std::string& key, double& out) {
    const json* value = take(key);
    if (!value) return;
    if (!value->is_number()) fail(key_path(key), "expected a number, got " + type_name(*value) + " " + value->dump());
    out = value->get<double>();
  }

  void read(const std::string& key, bool& out) {
    const json* value = take(key);
    if (!value) return;
    if (!value->is_boolean()) fail(key_path(key), "expected true or false, got " + type_name(*value) + " " + value->dump());
    out = value->get<bool>();
  }

  void read(const std::string& key, std::string& out) {
    const json* value = take(key);
    if (!value) return;
    if (!value->is_string()) fail(key_path(key), "expected a string, got " + type_name(*value) + " " + value->dump());
    out = value->get<std::string>();
  }

  // An integer, or the string "auto" (stored as 0).
  void read_auto(const std::string& key, int64_t& out) {
    const json* value = take(key);
    if (!value) return;
    if (value->is_string()) {
      if (value->get<std::string>() != "auto") fail(key_path(key), "expected an integer or \"auto\", got " + value->dump());
      out = 0;
      return;
    }
    consumed_.erase(key);
    read(key, out);
  }

  const json* take(const std::string& key) {
    auto it = object_.find(key);
    if (it == object_.end()) return nullptr;
    consumed_.insert(key);
    return &*it;
  }

  void require(const std::string& key) const {
    if (!has(key)) fail(key_path(key), "is required but missing");
  }

  ObjectReader child(const std::string& key) {
    const json* value = take(key);
    return ObjectReader(value ? *value : json::object(), source_, key_path(key));
  }

  void finish() const {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      if (!consumed_.count(it.key())) fail(key_path(it.key()), "unknown key");
    }
  }

 private:
  json object_;  // a copy: configs are small, and a child may be built from a temporary
  std::string source_;
  std::string path_;
  std::set<std::string> consumed_;
};


}  // namespace densessm::json_config
