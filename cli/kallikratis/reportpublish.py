"""Publishing the scorecard page on the control VM, over the one SSH path (pinned host key)."""

from __future__ import annotations

import shlex

from kallikratis.guest import Guest
from kallikratis.ssh import SshTarget

#: where nginx on the control VM serves the dashboard from (the monitoring role's docroot)
REMOTE_PATH = "/var/www/kallikratis-report/index.html"
PUBLISH_TIMEOUT = 120.0


def publish_script(path: str = REMOTE_PATH) -> str:
    """The shell script run as root on control: stdin into a temporary file next to *path*,
    then one rename, so that nginx never serves half a page."""
    dest = shlex.quote(path)
    return (
        f'dir=$(dirname {dest}); test -d "$dir" || '
        '{ echo "$dir is missing: deploy the monitoring role on control first" >&2; exit 3; }; '
        'tmp=$(mktemp "$dir/.index.html.XXXXXX"); trap \'rm -f "$tmp"\' EXIT; '
        'cat > "$tmp"; chmod 0644 "$tmp"; '
        f'mv -f "$tmp" {dest}; trap - EXIT'
    )


def publish(target: SshTarget, html: str, path: str = REMOTE_PATH) -> None:
    """Upload *html* to *path* on the control VM atomically; GuestError when it fails."""
    Guest(target).run(publish_script(path), timeout=PUBLISH_TIMEOUT, stdin=html)
