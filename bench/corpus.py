"""Generated documents for the file benchmarks: Markdown and text with a Zipf-like vocabulary,
sizes spread from a few KB to about a MB, and some PDFs. Deterministic for a seed."""

from __future__ import annotations

import random
from pathlib import Path

MB = 1_000_000


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [26 - i for i in range(26)]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 11))) for _ in range(size)]


def paragraph(rng: random.Random, words: list[str], cum: list[float]) -> str:
    picked = rng.choices(words, cum_weights=cum, k=rng.randint(30, 160))
    sentences, start = [], 0
    while start < len(picked):
        end = start + rng.randint(6, 20)
        sentences.append(" ".join(picked[start:end]).capitalize() + ".")
        start = end
    return " ".join(sentences)


def markdown_document(rng: random.Random, words: list[str], cum: list[float], size: int) -> str:
    parts: list[str] = [f"# {' '.join(rng.choices(words, k=4)).title()}"]
    length = 0
    while length < size:
        roll = rng.random()
        if roll < 0.1:
            block = f"## {' '.join(rng.choices(words, k=3)).title()}"
        elif roll < 0.18:
            block = "\n".join(f"- {' '.join(rng.choices(words, cum_weights=cum, k=8))}" for _ in range(5))
        elif roll < 0.22:
            block = (
                "```python\n"
                + "\n".join(f"{w} = {i}" for i, w in enumerate(rng.choices(words, k=6)))
                + "\n```"
            )
        else:
            block = paragraph(rng, words, cum)
        parts.append(block)
        length += len(block) + 2
    return "\n\n".join(parts)


def text_document(rng: random.Random, words: list[str], cum: list[float], size: int) -> str:
    parts: list[str] = []
    length = 0
    while length < size:
        block = paragraph(rng, words, cum)
        parts.append(block)
        length += len(block) + 2
    return "\n\n".join(parts)


def pdf_document(path: Path, rng: random.Random, words: list[str], cum: list[float], pages: int) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=A4)
    for _ in range(pages):
        y = 800
        while y > 60:
            pdf.drawString(40, y, " ".join(rng.choices(words, cum_weights=cum, k=12)))
            y -= 14
        pdf.showPage()
    pdf.save()


def generate_corpus(directory: Path, total_mb: float, count: int, pdfs: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    words = vocabulary(rng)
    # Zipf-like frequencies, as in natural text.
    cum: list[float] = []
    running = 0.0
    for rank in range(1, len(words) + 1):
        running += 1.0 / rank
        cum.append(running)
    target = int(total_mb * MB)
    # Sizes spread from a few KB to about a MB, scaled to the target total.
    raw = [rng.lognormvariate(0, 0.9) for _ in range(count)]
    scale = target / sum(raw)
    paths: list[Path] = []
    for index, weight in enumerate(raw):
        size = max(2_000, int(weight * scale))
        markdown = index % 2 == 0
        path = directory / f"doc-{index:04d}.{'md' if markdown else 'txt'}"
        body = (markdown_document if markdown else text_document)(rng, words, cum, size)
        path.write_text(body)
        paths.append(path)
    for index in range(pdfs):
        path = directory / f"paper-{index:02d}.pdf"
        pdf_document(path, rng, words, cum, pages=rng.randint(10, 30))
        paths.append(path)
    return paths
