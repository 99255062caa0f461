"""kallikratis-hub: the regional interoperability hub's harvester, outputs and search.

Runs on the hub VM with Debian's own packages only (python3, python3-rdflib, python3-feedgen,
python3-jinja2): it harvests every municipality portal's public APIs (WordPress REST, Datasette
JSON) into one SQLite database, then writes the static outputs (DCAT-AP catalog, Atom feeds,
Greek HTML pages) and a read-only snapshot that the search application serves.
"""

__version__ = "1.0"
