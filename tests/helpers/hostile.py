"""Valid but hostile inventory text, for the unit tests of each sink and the end-to-end test
that deploys it (every character class that breaks naive quoting in systemd units, nginx,
XML, PHP, shell, HTML, YAML and JSON; no control character, which validation refuses)."""

HOSTILE_DISPLAY_NAME = "Δήμος \"Ηρακλείου\" & <Σ> 100% $HOME \\ 'x'"
