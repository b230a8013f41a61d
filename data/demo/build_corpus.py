"""Rebuild the demo corpus from the docstrings of Python's standard library (PSF License; see LICENSE.md).

Run with the Python whose documentation you want: ``python data/demo/build_corpus.py > data/demo/stdlib.jsonl``.
The committed file was built with CPython 3.11.7. One document per module or public function/class that
has a docstring of at least 80 characters: id = qualified name, title = qualified name, text = the docstring's
first paragraphs (up to ~1,200 characters), metadata = module and kind.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys

MODULES = [
    "abc",
    "argparse",
    "array",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "concurrent.futures",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "itertools",
    "json",
    "logging",
    "math",
    "mimetypes",
    "operator",
    "os",
    "os.path",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "secrets",
    "shlex",
    "shutil",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "typing",
    "unicodedata",
    "urllib.parse",
    "uuid",
    "warnings",
    "weakref",
    "zipfile",
    "zlib",
]
MIN_CHARS = 80
MAX_CHARS = 1200
PER_MODULE = 8


def first_paragraphs(doc: str) -> str:
    text = inspect.cleandoc(doc)
    out: list[str] = []
    for para in text.split("\n\n"):
        para = " ".join(para.split())
        if not para:
            continue
        if out and len(" ".join(out)) + len(para) > MAX_CHARS:
            break
        out.append(para)
    return "\n\n".join(out)[:MAX_CHARS]


def main() -> None:
    seen: set[str] = set()
    for name in MODULES:
        module = importlib.import_module(name)
        entries = [(name, "module", module.__doc__)]
        members = sorted(
            (n, obj)
            for n, obj in vars(module).items()
            if not n.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj))
            and getattr(obj, "__module__", name) in (name, "_" + name.split(".")[-1], None)
        )
        picked = 0
        for member, obj in members:
            if picked >= PER_MODULE:
                break
            doc = inspect.getdoc(obj)
            if doc and len(doc) >= MIN_CHARS:
                kind = "class" if inspect.isclass(obj) else "function"
                entries.append((f"{name}.{member}", kind, doc))
                picked += 1
        for qualname, kind, doc in entries:
            if not doc or qualname in seen:
                continue
            text = first_paragraphs(doc)
            if len(text) < MIN_CHARS:
                continue
            seen.add(qualname)
            record = {"id": qualname, "title": qualname, "text": text, "module": name, "kind": kind}
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
