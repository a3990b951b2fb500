"""The docs stay true: every command they show is one pegu (or make, papermill, the
benchmarks) accepts as written, every pegu subcommand they show is run end to end by a test,
the README's example runs, and the README stays a front page."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from pegu.cli.parser import parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# commands of other tools the docs show as they are (installing, uploading, activating)
OTHERS = ("pip ", "python -m venv", ". .venv", "kaggle datasets", "kaggle kernels", "conda ")


def _blocks(page: Path, language: str):
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.S)


def _commands():
    """(page, command) for every command line of every ```bash block."""
    for page in PAGES:
        for block in _blocks(page, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"(^|\s+)#.*$", "", line).strip()  # comments
                for part in (p.strip() for p in line.split("&&")):
                    if part:
                        yield page.name, part


def _subcommands_tests_run() -> set[str]:
    """The pegu subcommands some test runs whole: main([...]), a subprocess of `pegu`, or
    the tests' `pegu_cmd` helper."""
    text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    found = set(re.findall(r'main\(\[\s*"(\w+)"', text))
    found |= set(re.findall(r'pegu_cmd\(\s*"(\w+)"', text))
    found |= set(re.findall(r'\[str\(exe\),\s*"(\w+)"', text))
    found |= set(re.findall(r'"-m", "pegu\.cli",\s*"(\w+)"', text))
    return found


def test_every_command_the_docs_show_is_accepted_as_written():
    commands = list(_commands())
    assert len(commands) > 30
    make_targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    shown = set()
    for page, cmd in commands:
        words = shlex.split(cmd)
        if cmd.startswith(OTHERS):
            continue
        if words[0] == "pegu" or words[:2] == ["accelerate", "launch"]:
            args = words[1:] if words[0] == "pegu" else words[words.index("pegu.cli") + 1:]
            try:
                parsed = parser().parse_args(args)
            except SystemExit:
                pytest.fail(f"{page}: `{cmd}` is not a command pegu accepts")
            shown.add(parsed.command)
        elif words[0] == "make":
            assert words[1] in make_targets, f"{page}: no make target {words[1]!r}"
        elif words[0] in ("bash", "python", ".venv/bin/python"):
            script = ROOT / words[1]
            assert script.is_file(), f"{page}: {words[1]} does not exist"
            source = script.read_text()
            for exec_target in re.findall(r"benchmarks/\w+\.py", source):  # a wrapper's
                source += (ROOT / exec_target).read_text()
            for flag in (w for w in words[2:] if w.startswith("--")):
                assert flag in source, f"{page}: {words[1]} has no {flag}"
        elif words[0] == "papermill":
            notebook = next(ROOT / w for w in words if w.endswith(".ipynb"))
            assert notebook.is_file(), f"{page}: no {notebook}"
            cells = json.loads(notebook.read_text())["cells"]
            declared = "".join("".join(c["source"]) for c in cells
                               if "parameters" in c.get("metadata", {}).get("tags", []))
            for i, w in enumerate(words):
                if w == "-p":
                    assert re.search(rf"^{words[i + 1]}:", declared, re.M), \
                        f"{page}: the notebook has no parameter {words[i + 1]}"
        else:
            pytest.fail(f"{page}: `{cmd}`: a command this test does not know how to check")
    # and each pegu command the docs show is run end to end by a test
    assert shown - _subcommands_tests_run() == set(), "docs show commands no test runs"


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """The README's example, as written but for the model (the tiny offline one) and a
    smaller target: it makes a PNG that carries its recipe."""
    code = _blocks(ROOT / "README.md", "python")[0]
    code = code.replace('model="realistic-vision-v6")',
                        'model="tiny-sd15", target=(512, 512))')
    assert 'model="tiny-sd15"' in code and "pegu.run(settings)" in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    import pegu

    assert namespace["result"].image.size == (512, 512)
    assert pegu.read_settings(tmp_path / "fisherman.png") == namespace["result"].settings


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    first = _blocks(ROOT / "README.md", "bash")[0].split()
    assert first[:2] == ["make", "demo"] and "make" in first[2:] and "test" in first[2:]
    # it links every page of docs/, and every link it makes leads somewhere
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in text, f"README does not link docs/{page.name}"
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+\.md)\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links {target}, missing"
