"""make release: the files a platform team pins, named by VERSION, and their checksums.

    python3 tools/release.py [OUT]    # OUT defaults to dist/

writes OUT/iam-key-rotation-X.Y.Z.zip (the function: lambda_function.py alone, as make package's), OUT/template-
X.Y.Z.yaml (template.yaml, whose function carries the version tag) and OUT/SHA256SUMS in sha256sum's format, so
that `sha256sum -c SHA256SUMS` checks a download. The zip is the same byte for byte whenever it is built from the
same source (its date and permissions fixed): a checksum names the release, not the moment it was built.

Refused (exit 2, nothing written) unless VERSION is a semantic version that lambda_function.py's __version__,
the template's version tag and CHANGELOG.md's newest release section all say.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
import zipfile
from pathlib import Path

from deploy_values import ROOT, VERSION_TAG, Refused, release_version

NAME = "iam-key-rotation"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest: no build time in the bytes


def checked_version(root: Path = ROOT) -> str:
    """VERSION, said alike by the function, the template's tag and the changelog's newest release; else Refused."""
    version = release_version(root)
    template = (root / "template.yaml").read_text()
    tagged = re.search(rf"- Key: {VERSION_TAG}\n\s+Value: \"([^\"]*)\"", template)
    if not tagged or tagged.group(1) != version:
        raise Refused(f"template.yaml's {VERSION_TAG} tag says {tagged.group(1) if tagged else 'nothing'}, VERSION "
                      f"says {version}: keep them equal")
    releases = re.findall(r"^## \[(\d[^\]]*)\]", (root / "CHANGELOG.md").read_text(), re.M)
    if not releases or releases[0] != version:
        raise Refused(f"CHANGELOG.md's newest release is {releases[0] if releases else 'none'}, VERSION says "
                      f"{version}: write its section (## [{version}] - YYYY-MM-DD) first")
    return version


def function_zip(source: bytes) -> bytes:
    """lambda_function.py alone, its date and permissions fixed."""
    entry = zipfile.ZipInfo("lambda_function.py", date_time=FIXED_DATE)
    entry.external_attr = 0o100644 << 16  # a regular file, readable by Lambda's runtime user
    entry.compress_type = zipfile.ZIP_DEFLATED
    made = io.BytesIO()
    with zipfile.ZipFile(made, "w") as archive:
        archive.writestr(entry, source)
    return made.getvalue()


def build(out: Path, root: Path = ROOT) -> list[Path]:
    """The release's files in ``out``, and SHA256SUMS last (each written whole, then renamed)."""
    version = checked_version(root)
    files = {f"{NAME}-{version}.zip": function_zip((root / "lambda_function.py").read_bytes()),
             f"template-{version}.yaml": (root / "template.yaml").read_bytes()}
    files["SHA256SUMS"] = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                                  for name, data in files.items()).encode()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files.items():
        partial = out / f".{name}.tmp"
        partial.write_bytes(data)
        partial.replace(out / name)
        written.append(out / name)
    return written


def main(argv: list[str]) -> int:
    try:
        written = build(Path(argv[0]) if argv else ROOT / "dist")
    except Refused as refused:
        print(f"refused, nothing written: {refused}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    print(f"check a download: cd {written[0].parent} && sha256sum -c SHA256SUMS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
