"""Regenerate `imagenet_classes.txt` from the ImageNet-1k category list inside a torchvision wheel.

How the shipped file was made (once, by hand; nothing runs this at install time):

    pip download --no-deps torchvision==0.29.1 -d /tmp/tv
    python -m ml.encoders.make_imagenet_classes /tmp/tv/torchvision-0.29.1-*.whl

torchvision keeps the 1000 names, in class-index order, as the literal list
`_IMAGENET_CATEGORIES` in `torchvision/models/_meta.py`. We read that file straight out
of the wheel (a zip) and evaluate only that literal, so torchvision never gets imported.
"""

from __future__ import annotations

import ast
import sys
import zipfile
from pathlib import Path

META_PATH = "torchvision/models/_meta.py"
VARIABLE = "_IMAGENET_CATEGORIES"
OUTPUT = Path(__file__).with_name("imagenet_classes.txt")


def categories_from_wheel(wheel: str | Path) -> list[str]:
    """The ImageNet-1k class names, index order, from a torchvision wheel."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read(META_PATH).decode("utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == VARIABLE for t in node.targets
        ):
            names = ast.literal_eval(node.value)
            break
    else:
        raise SystemExit(f"{VARIABLE} not found in {META_PATH}")
    if len(names) != 1000 or not all(isinstance(n, str) and n.strip() for n in names):
        raise SystemExit(f"{VARIABLE} is not 1000 non-empty names")
    return names


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m ml.encoders.make_imagenet_classes TORCHVISION_WHEEL")
    names = categories_from_wheel(argv[0])
    OUTPUT.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    print(f"wrote {len(names)} names to {OUTPUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
