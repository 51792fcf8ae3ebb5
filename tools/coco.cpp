// `coco`: the command-line tool (prepare, train, eval). See tools/lib/commands.h.
#include <string>
#include <vector>

#include "tools/lib/commands.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  return coco::tools::run_cli(args);
}
