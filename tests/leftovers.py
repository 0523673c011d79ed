"""What the library's writers leave behind, found by the names they give their temporary files."""

from pathlib import Path

from contrastive_prompts.app.files import TEMPORARY_SUFFIX


def temporaries(folder: Path) -> list[Path]:
    """The writers' temporary files anywhere under ``folder``.

    A writer writes ``.<target name>.<random>-<host>-<process id>.partial<target suffix>`` beside
    its target and renames it over the target when done (see ``writing``): a hidden name with
    the temporary suffix inside, not at its end.
    """
    return sorted(p for p in Path(folder).rglob(".*") if TEMPORARY_SUFFIX in p.name)
