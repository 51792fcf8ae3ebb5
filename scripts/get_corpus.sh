#!/usr/bin/env bash
# Fetches the English text corpus for the README's main job and extracts plain UTF-8 prose.
#
# Source: the Debian package `python3.11-doc` (Debian's main archive, fetched with `apt-get download`, nothing
# else is downloaded): the reStructuredText sources of the Python 3.11 documentation (tutorial, language and
# library reference, HOWTOs, FAQs, "What's New" essays), about 11 MB of English technical prose. Licence:
# Python Software Foundation License Version 2 (the package's copyright file is copied next to the text as
# COPYING.python3.11-doc).
#
# Extraction keeps prose: code samples (literal blocks after "::", doctest sessions, code-block directives),
# signatures and options of directives, comments, tables and title underlines are dropped, while the bodies of
# description and admonition directives (.. function::, .. note:: ...) are kept; inline markup (:role:`text`,
# ``literal``, `link <url>`_, *emphasis*) becomes its text. Each section of a page becomes one document: its paragraphs
# are lines of that document, and a blank line separates documents (the rule of `coco prepare`).
#
# Usage: scripts/get_corpus.sh [out_dir]     (default data/corpus, which git ignores)
# Idempotent: when out_dir already holds the text of the same package version it only prints the summary.
# Needs: apt-get (with package lists; runs `apt-get update` when the package is unknown), dpkg-deb, python3.
set -euo pipefail

PACKAGE=python3.11-doc
LICENSE="PSF-2.0 (Python Software Foundation License Version 2)"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/data/corpus}"
TEXT_DIR="$OUT/python-docs"
STAMP="$OUT/.source"

for tool in apt-get apt-cache dpkg-deb python3; do
  command -v "$tool" >/dev/null || { echo "get_corpus: '$tool' is required but not installed" >&2; exit 1; }
done

candidate_version() { apt-cache policy "$PACKAGE" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
VERSION="$(candidate_version)"
if [ -z "$VERSION" ] || [ "$VERSION" = "(none)" ]; then
  echo "get_corpus: $PACKAGE unknown to apt; running apt-get update" >&2
  apt-get update -qq
  VERSION="$(candidate_version)"
fi
if [ -z "$VERSION" ] || [ "$VERSION" = "(none)" ]; then
  echo "get_corpus: Debian package $PACKAGE is not available from the configured archive" >&2
  exit 1
fi

summary() {
  local files bytes
  files=$(find "$TEXT_DIR" -type f -name '*.txt' | wc -l)
  bytes=$(find "$TEXT_DIR" -type f -name '*.txt' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  echo "corpus: $TEXT_DIR"
  echo "source: Debian package $PACKAGE $(cat "$STAMP") (Python 3.11 documentation, reStructuredText sources)"
  echo "licence: $LICENSE; see $OUT/COPYING.$PACKAGE"
  echo "size: $files files, $bytes bytes ($((bytes / 1000000)) MB) of UTF-8 text"
  if [ "$bytes" -lt 5000000 ]; then
    echo "get_corpus: expected at least 5 MB of text, got $bytes bytes" >&2
    exit 1
  fi
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION" ] && [ -d "$TEXT_DIR" ]; then
  echo "get_corpus: $TEXT_DIR already holds $PACKAGE $VERSION; nothing to do"
  summary
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "get_corpus: downloading $PACKAGE $VERSION from the Debian archive"
# apt's sandbox user must be able to write the download directory.
chmod 777 "$WORK"
(cd "$WORK" && apt-get download -q "$PACKAGE=$VERSION" >/dev/null)
DEB="$(ls "$WORK"/*.deb)"
dpkg-deb -x "$DEB" "$WORK/root"
SOURCES="$WORK/root/usr/share/doc/python3.11/html/_sources"
[ -d "$SOURCES" ] || { echo "get_corpus: $DEB has no $SOURCES" >&2; exit 1; }

rm -rf "$TEXT_DIR" "$STAMP"
mkdir -p "$TEXT_DIR"
python3 - "$SOURCES" "$TEXT_DIR" <<'PY'
import os
import re
import sys

source_root, out_root = sys.argv[1], sys.argv[2]

UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}\s*$")
DIRECTIVE = re.compile(r"^\s*\.\.\s")
DIRECTIVE_NAME = re.compile(r"^\s*\.\.\s+([\w:-]+)::(.*)$")
OPTION = re.compile(r"^\s+:[\w-]+:(\s.*)?$")
# Directives whose body is code, markup or navigation, not prose.
SKIPPED = {"code-block", "sourcecode", "code", "literalinclude", "doctest", "testcode", "testoutput", "testsetup",
           "testcleanup", "highlight", "productionlist", "index", "toctree", "raw", "image", "figure", "only",
           "csv-table", "list-table", "table", "include", "audit-event-table", "availability", "impl-detail",
           "opcodemacro", "c:macro", "literal", "math", "graphviz", "autosummary"}
# Directives whose argument on the directive line is prose (other arguments are signatures or versions).
PROSE_ARGUMENT = {"note", "warning", "seealso", "important", "tip", "caution", "attention", "hint", "danger",
                  "error", "admonition", "topic", "sidebar", "rubric"}
TABLE = re.compile(r"^\s*(\+[-=+]+\+|\|.*\||={2,}(\s+={2,})+)\s*$")
ROLE = re.compile(r":[\w:+-]+:`([^`]*)`")
REF = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")
LINK = re.compile(r"`([^`]+)`__?")
LITERAL = re.compile(r"``([^`]+)``")
EMPHASIS = re.compile(r"(\*\*|\*)(\S(?:.*?\S)?)\1")
TARGET = re.compile(r"<[^<>]*>$")


def inline(text):
    def role(m):
        inner = m.group(1)
        inner = TARGET.sub("", inner).strip() or m.group(1)
        return inner.lstrip("~!")
    text = ROLE.sub(role, text)
    text = REF.sub(lambda m: m.group(1), text)
    text = LINK.sub(lambda m: m.group(1), text)
    text = LITERAL.sub(lambda m: m.group(1), text)
    text = EMPHASIS.sub(lambda m: m.group(2), text)
    return text.replace("\\", "")


def indent(line):
    return len(line) - len(line.lstrip(" "))


def convert(lines):
    documents, paragraph, document = [], [], []
    def end_paragraph():
        if paragraph:
            text = " ".join(p.strip() for p in paragraph).strip()
            if text:
                document.append(inline(text))
            paragraph.clear()
    def end_document():
        end_paragraph()
        if document:
            documents.append("\n".join(document))
            document.clear()
    skip_indent = None  # skipping an indented block (code, directive body, comment) deeper than this
    in_options = False  # right after a kept directive line: its ":option:" lines
    skip_to_blank = False  # inside a table or doctest session, which end at a blank line
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\n").replace("\t", "    ")
        stripped = line.strip()
        if skip_to_blank:
            skip_to_blank = stripped != ""
            i += 1
            continue
        if skip_indent is not None:
            if stripped == "" or indent(line) > skip_indent:
                i += 1
                continue
            skip_indent = None
        if in_options and stripped and OPTION.match(line):
            i += 1
            continue
        in_options = False
        directive = DIRECTIVE_NAME.match(line)
        if stripped == "":
            end_paragraph()
        elif directive and directive.group(1) not in SKIPPED:
            # Description and admonition directives: the indented body is prose of this document.
            end_paragraph()
            in_options = True
            if directive.group(1) in PROSE_ARGUMENT and directive.group(2).strip():
                paragraph.append(directive.group(2))
        elif DIRECTIVE.match(line) or stripped == "..":
            end_paragraph()
            skip_indent = indent(line)
        elif UNDERLINE.match(line):
            # A title: the previous paragraph line is its text, and it starts a new document.
            if paragraph and len(paragraph) == 1:
                title = paragraph.pop()
                end_document()
                document.append(inline(title.strip()))
            else:
                end_paragraph()
        elif stripped.startswith(">>>") or TABLE.match(line):
            end_paragraph()
            skip_to_blank = True
        else:
            paragraph.append(line)
            if stripped.endswith("::"):
                # "text::" introduces a literal block: keep the text (with one colon unless it was only "::").
                paragraph[-1] = line.rstrip()[:-2] + ("" if stripped == "::" else ":")
                end_paragraph()
                skip_indent = indent(line)
        i += 1
    end_document()
    return documents


count = 0
for directory, _, names in sorted(os.walk(source_root)):
    for name in sorted(names):
        if not name.endswith(".rst.txt"):
            continue
        source = os.path.join(directory, name)
        with open(source, encoding="utf-8") as f:
            documents = convert(f.readlines())
        documents = [d for d in documents if len(d) >= 80]  # drop stubs: a lone title, an index entry
        if not documents:
            continue
        relative = os.path.relpath(source, source_root)[: -len(".rst.txt")] + ".txt"
        target = os.path.join(out_root, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write("\n\n".join(documents) + "\n")
        count += 1
print(f"get_corpus: extracted {count} pages")
PY
cp "$WORK/root/usr/share/doc/$PACKAGE/copyright" "$OUT/COPYING.$PACKAGE"
echo "$VERSION" >"$STAMP"
summary
