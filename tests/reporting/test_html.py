"""The self-contained HTML page: the markdown subset the report writes, plots embedded."""

from __future__ import annotations

from pathlib import Path

from bofexits.evaluation.comparison import Comparison
from bofexits.reporting.html import render_html
from bofexits.reporting.markdown import render_comparison


def test_markdown_subset_and_embedded_images(tmp_path: Path) -> None:
    (tmp_path / "plot.png").write_bytes(b"\x89PNG fake")
    md = "\n".join(
        [
            "# Title",
            "",
            "Some **bold** `code` <tag>.",
            "",
            "| a | b |",
            "|---|---|",
            "| 1 | 2 |",
            "",
            "- x",
            "- y",
        ]
        + ["", "![plot](plot.png)", "![gone](missing.png)"]
    )
    page = render_html(md, tmp_path, "t & t")
    assert "<title>t &amp; t</title>" in page and "<h1>Title</h1>" in page
    assert "<p>Some <strong>bold</strong> <code>code</code> &lt;tag&gt;.</p>" in page
    assert "<thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody>" in page
    assert "<ul><li>x</li><li>y</li></ul>" in page
    assert page.count("data:image/png;base64,") == 1  # the missing plot is left out


def test_the_comparison_page_shows_the_papers_rule_and_the_intervals(
    comparison_result: Comparison, tmp_path: Path
) -> None:
    page = render_html(render_comparison(comparison_result), tmp_path, "t")
    assert "<td>paper&#x27;s original rule (rule-max_logit-mean label)</td>" in page
    assert "<li>At 75% of the MACs: tie with max-softmax (+0.10 pp, 95% CI -0.40..+0.60 pp;" in page
