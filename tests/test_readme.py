"""The README's settings reference is generated from the schema; it must not drift."""

from pathlib import Path

from fastproxy.config.reference import replace_reference

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_reference_matches_schema() -> None:
    text = README.read_text()
    assert replace_reference(text) == text, "run: python -m fastproxy.config.reference --write README.md"
