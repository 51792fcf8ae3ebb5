#include "engine/io/checked_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <vector>

#include "engine/config.h"

namespace coco::io {

namespace fs = std::filesystem;

namespace {

// Thrown from inside the parser callback (not a nlohmann exception, so nothing in the parser catches it).
struct Refused {
  std::string message;
};

std::string prefixed(const std::string& source, const std::string& message) {
  return source.empty() ? message : source + ": " + message;
}

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

}  // namespace

nlohmann::json parse_json_checked(std::string_view text, const std::string& source) {
  struct Frame {
    bool object = false;
    std::set<std::string> keys;
    std::string key;  // the key whose value is being read (objects)
  };
  std::vector<Frame> open;
  auto key_path = [&] {
    std::string path;
    for (const auto& f : open)
      if (f.object && !f.key.empty()) path += (path.empty() ? "" : ".") + f.key;
    return path;
  };
  using Event = nlohmann::json::parse_event_t;
  nlohmann::json::parser_callback_t check = [&](int depth, Event event, nlohmann::json& parsed) {
    switch (event) {
      case Event::object_start:
      case Event::array_start:
        if (depth >= kMaxJsonDepth)
          throw Refused{"nesting deeper than " + std::to_string(kMaxJsonDepth) + " levels" +
                        (open.empty() ? std::string() : " (under key '" + key_path() + "')")};
        open.push_back({event == Event::object_start, {}, {}});
        break;
      case Event::object_end:
      case Event::array_end:
        if (!open.empty()) open.pop_back();
        break;
      case Event::key:
        if (!open.empty()) {
          Frame& frame = open.back();
          frame.key = parsed.get<std::string>();
          if (!frame.keys.insert(frame.key).second) throw Refused{"duplicate key '" + key_path() + "'"};
        }
        break;
      case Event::value:
        break;
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), check, /*allow_exceptions=*/true,
                                 /*ignore_comments=*/false);
  } catch (const Refused& refused) {
    throw ConfigError(prefixed(source, refused.message));
  } catch (const nlohmann::json::out_of_range& e) {
    // 1e400: the only out_of_range the parser raises is a number that overflows a double.
    const std::string where = key_path();
    throw ConfigError(prefixed(source, (where.empty() ? std::string() : "key '" + where + "': ") +
                                           "number out of range of a double (" + e.what() + ")"));
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(prefixed(source, std::string("invalid JSON: ") + e.what()));
  }
}

int open_regular_file(const fs::path& path, const std::string& what) {
  // stat first: opening a FIFO for reading, even non-blocking, can have side effects on its writer.
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0)
    throw ConfigError(path.string() + ": cannot open " + what + ": " + std::strerror(errno));
  if (!S_ISREG(info.st_mode))
    throw ConfigError(path.string() + ": " + what + " is " + file_kind(info.st_mode) + ", expected a regular file");
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw ConfigError(path.string() + ": cannot open " + what + ": " + std::strerror(errno));
  // Swapped between stat and open: check what was actually opened.
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    throw ConfigError(path.string() + ": " + what + " is " + file_kind(info.st_mode) + ", expected a regular file");
  }
  return fd;
}

std::string read_regular_file(const fs::path& path, uint64_t max_bytes, const std::string& what) {
  const int fd = open_regular_file(path, what);
  std::string contents;
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int saved = errno;
      ::close(fd);
      throw ConfigError(path.string() + ": cannot read " + what + ": " + std::strerror(saved));
    }
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
    if (contents.size() > max_bytes) {
      ::close(fd);
      throw ConfigError(path.string() + ": " + what + " is larger than the limit of " + std::to_string(max_bytes) +
                        " bytes");
    }
  }
  ::close(fd);
  return contents;
}

nlohmann::json read_json_checked(const fs::path& path, uint64_t max_bytes) {
  return parse_json_checked(read_regular_file(path, max_bytes), path.string());
}

}  // namespace coco::io
