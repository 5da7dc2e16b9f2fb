"""Regenerate configs/README.md, the reference of every config key: ``python tools/config_doc.py``."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.config import schema_markdown  # noqa: E402

if __name__ == "__main__":
    path = os.path.join(ROOT, "configs", "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(schema_markdown().strip() + "\n")
    print(f"wrote {path}")
