"""How verify's checks find a display name on a page: WordPress texturizes quotes in a title,
Jinja and Datasette escape them as entities; a hostile-but-valid name must still be found
(the real-VM run with such a name failed verify before)."""

from __future__ import annotations

import html

import jinja2
from kallikratis.checks.helpers_data import shows_name

from tests.helpers.hostile import HOSTILE_DISPLAY_NAME as NAME


def test_a_wordpress_title_with_curly_quotes_shows_the_name() -> None:
    page = (
        "<title>Δήμος &#8220;Ηρακλείου&#8221; &amp; &lt;Σ&gt; 100% $HOME \\ &#8216;x&#8217;</title>"
    )
    assert shows_name(page, NAME)


def test_jinja_and_python_escaping_show_the_name() -> None:
    jinja = jinja2.Environment(autoescape=True).from_string("<h1>{{ n }}</h1>").render(n=NAME)
    assert shows_name(jinja, NAME)
    assert shows_name(f"<h1>{html.escape(NAME)}</h1>", NAME)


def test_a_page_without_the_name_or_with_part_of_it_does_not() -> None:
    assert not shows_name("<h1>Δήμος Ηρακλείου</h1>", NAME)
    assert not shows_name(f"<h1>{html.escape(NAME.replace('&', ''))}</h1>", NAME)
    assert not shows_name(f"<h1>{NAME.replace('&', '&amp;amp;')}</h1>", NAME)
