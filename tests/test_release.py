"""Releases (issue 40): one version said alike everywhere, a changelog, and make release's files with checksums that
sha256sum checks."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import deploy_config
import deploy_values
import pytest
import release

import lambda_function

ROOT = Path(__file__).parent.parent
VERSION = (ROOT / "VERSION").read_text().strip()
CHANGELOG = (ROOT / "CHANGELOG.md").read_text()

pytestmark = pytest.mark.unit


def test_the_version_is_semantic_and_the_function_and_the_template_say_the_same():
    assert re.fullmatch(deploy_values.VERSION_RE, VERSION), VERSION
    assert (ROOT / "VERSION").read_text() == f"{VERSION}\n", "one line"
    assert lambda_function.__version__ == VERSION
    assert deploy_config.release_version() == VERSION
    assert release.checked_version() == VERSION, "the template's key-rotation-version tag, the changelog's newest"


def test_the_changelog_keeps_a_changelog_from_the_first_release_on():
    assert CHANGELOG.startswith("# Changelog\n") and "[Keep a Changelog](https://keepachangelog.com/" in CHANGELOG
    releases = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d\d-\d\d))?$", CHANGELOG, re.M)
    assert releases[0] == ("Unreleased", "") and releases[1][0] == VERSION and releases[1][1], releases
    assert releases[-1][0] == "1.0.0", "it starts at 1.0.0"
    kinds = set(re.findall(r"^### (.+)$", CHANGELOG, re.M))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"} and "Added" in kinds


def test_make_release_builds_the_function_the_template_and_their_checksums():
    done = subprocess.run(["make", "-s", "release"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    dist = ROOT / "dist"
    code, template, sums = (dist / f"iam-key-rotation-{VERSION}.zip", dist / f"template-{VERSION}.yaml",
                            dist / "SHA256SUMS")
    with zipfile.ZipFile(code) as archive:
        assert archive.namelist() == ["lambda_function.py"]
        assert archive.read("lambda_function.py") == (ROOT / "lambda_function.py").read_bytes()
    assert template.read_bytes() == (ROOT / "template.yaml").read_bytes()
    assert sums.read_text() == "".join(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"
                                       for path in (code, template)), "sha256sum's format"
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dist, capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout == f"{code.name}: OK\n{template.name}: OK\n"


def test_a_release_built_again_is_the_same_byte_for_byte(tmp_path):
    first, again = release.build(tmp_path / "a"), release.build(tmp_path / "b")
    assert [path.read_bytes() for path in first] == [path.read_bytes() for path in again]


def test_a_download_changed_on_the_way_fails_its_check(tmp_path):
    code, _template, _sums = release.build(tmp_path)
    code.write_bytes(code.read_bytes() + b"\0")
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode != 0 and f"{code.name}: FAILED" in checked.stdout


def source_tree(tmp_path: Path) -> Path:
    """A copy of the files a release is made from, to change one."""
    tmp_path.mkdir(parents=True)
    for name in ("VERSION", "lambda_function.py", "template.yaml", "CHANGELOG.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("file, old, new, says", [
    ("VERSION", VERSION, "1.0", "VERSION must be a semantic version like 1.2.3, not '1.0'"),
    ("lambda_function.py", f'__version__ = "{VERSION}"', '__version__ = "9.9.9"',
     f"VERSION says {VERSION} but lambda_function.py's __version__ is '9.9.9'"),
    ("template.yaml", f'Value: "{VERSION}"', 'Value: "9.9.9"',
     f"template.yaml's key-rotation-version tag says 9.9.9, VERSION says {VERSION}"),
    ("CHANGELOG.md", f"## [{VERSION}]", "## [0.0.1]",
     f"CHANGELOG.md's newest release is 0.0.1, VERSION says {VERSION}"),
])
def test_a_release_whose_files_disagree_on_the_version_is_refused_and_nothing_written(tmp_path, file, old, new, says):
    root = source_tree(tmp_path / "src")
    (root / file).write_text((root / file).read_text().replace(old, new, 1))
    with pytest.raises(deploy_config.Refused, match=re.escape(says)):
        release.build(tmp_path / "out", root)
    assert not (tmp_path / "out").exists()
