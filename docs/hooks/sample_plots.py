"""mkdocs hook: the tutorial shows the bundled sample's plots as the pipeline drew them, not copies kept in
git. After `make repro` the PNGs of artifacts/evaluation/ (each class's precision-recall curve, the first
detections drawn) join the site beside the tutorial, where its `<!-- sample plots -->` marker lists them;
before it, the marker says how to get them."""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

PAGE = "tutorials/first-deployment.md"
MARKER = "<!-- sample plots -->"
SOURCES = {"curves": "artifacts/evaluation/curves", "detections": "artifacts/evaluation/detections"}


def _pictures(config) -> dict[str, list[Path]]:
    root = Path(config.config_file_path).parent
    return {kind: sorted((root / folder).glob("*.png"))[:4] for kind, folder in SOURCES.items()}


def on_files(files, config):
    for kind, pictures in _pictures(config).items():
        for picture in pictures:
            files.append(File.generated(config, f"tutorials/sample/{kind}/{picture.name}", abs_src_path=str(picture)))
    return files


def on_page_markdown(markdown: str, page, config, files):
    if page.file.src_uri != PAGE:
        return markdown
    pictures = _pictures(config)
    if not any(pictures.values()):
        shown = "*Run `make repro` and build the site again: the sample's plots appear here.*"
    else:
        shown = "\n".join(f"![{kind} {p.stem}](sample/{kind}/{p.name})" for kind in SOURCES for p in pictures[kind])
    return markdown.replace(MARKER, shown)
