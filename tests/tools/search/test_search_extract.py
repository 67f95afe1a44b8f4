"""Page text: extraction from HTML, truncation to a budget, goal-focused excerpts."""

from __future__ import annotations

from tools.search.extract import content_text, fit, html_to_text

ARTICLE = """<html><head><title>The  Title</title><style>p {color: red}</style>
<script>var secret = 1;</script></head><body>
<nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<article><h1>Main heading</h1>
<p>The first paragraph of the article explains what the page is about in some detail.</p>
<p>The second paragraph adds more facts, for example that the bridge opened in 1871.</p>
</article><footer>Copyright footer</footer></body></html>"""


def test_html_to_text_keeps_the_content_and_drops_code() -> None:
    title, text = html_to_text(ARTICLE)
    assert title == "The Title"
    assert "bridge opened in 1871" in text
    assert "var secret" not in text and "color: red" not in text


def test_short_pages_fall_back_to_visible_text() -> None:
    _, text = html_to_text("<html><body><p>Tiny.</p><li>One item</li></body></html>")
    assert "Tiny." in text and "One item" in text


def test_plain_text_and_json_are_kept_as_is() -> None:
    assert content_text(' {"a": 1} ', "application/json") == ("", '{"a": 1}')
    assert content_text("line one\nline two", "text/plain")[1] == "line one\nline two"


def test_fit_keeps_short_text_whole() -> None:
    assert fit("short", 100) == ("short", False)


def test_fit_cuts_at_a_boundary_and_says_so() -> None:
    text = "\n".join(f"Sentence number {i} of a long page." for i in range(200))
    cut, was_cut = fit(text, 500)
    assert was_cut and len(cut) <= 500
    assert cut.endswith(f"of {len(text)} characters shown]")
    assert "Sentence number 0 " in cut


def test_fit_with_a_goal_keeps_the_matching_paragraphs_in_order() -> None:
    filler = [f"Filler paragraph {i} about nothing in particular at all." for i in range(100)]
    text = "\n".join(
        [
            *filler[:40],
            "The lighthouse keeper was Ada Brand.",
            *filler[40:],
            "Lighthouse built 1802.",
        ]
    )
    cut, was_cut = fit(text, 300, goal="Who kept the lighthouse and when was it built?")
    assert was_cut and len(cut) <= 300
    assert cut.index("Ada Brand") < cut.index("1802")
    assert "Filler" not in cut
    # A goal that matches nothing falls back to the beginning.
    assert "Filler paragraph 0" in fit(text, 300, goal="zebra")[0]
