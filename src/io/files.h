// Durable file and folder writes: the data goes to a temporary name, is fsync'ed and only then renamed
// into place, so a crash or a full disk never leaves a half-written file under its final name and never
// damages what was there before.
#pragma once

#include <functional>
#include <string>

namespace densessm::files {

/// fsync(2) on a file or folder; throws std::runtime_error naming it when that fails.
void fsync_path(const std::string& path);

/// Calls `write(temporary_path)`, fsyncs that file and renames it to `path`.
void write_file_atomically(const std::string& path, const std::function<void(const std::string& temporary)>& write);

/// Calls `write(temporary_folder)`, fsyncs every file in it and renames it to `folder`. An existing
/// `folder` is an error unless `replace`, in which case it is removed only after the new one is complete.
/// On failure the temporary folder is removed and the error rethrown.
void write_folder_atomically(const std::string& folder, bool replace,
                             const std::function<void(const std::string& temporary)>& write);

}  // namespace densessm::files
