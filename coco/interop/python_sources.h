// The COCO-LM modeling code for `transformers` (coco/interop/python/*.py), embedded into the binary at build
// time (coco/interop/embed_python.cmake generates the definition), so that `coco export` writes it from an
// installed binary without the source tree.
#pragma once
#include <span>
#include <string_view>

namespace coco::interop {

struct EmbeddedFile {
  std::string_view name;      // "modeling_cocolm.py"
  std::string_view contents;  // the file's bytes
};

// configuration_cocolm.py and modeling_cocolm.py.
std::span<const EmbeddedFile> cocolm_python_files();

}  // namespace coco::interop
