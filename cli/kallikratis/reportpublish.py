"""Publishing the scorecard page on the control VM, over the one SSH path (pinned host key)."""

from __future__ import annotations

import shlex

from kallikratis.errors import KallikratisError
from kallikratis.guest import Guest, GuestError
from kallikratis.ssh import SshTarget

#: where nginx on the control VM serves the dashboard from (the monitoring role's docroot)
REMOTE_PATH = "/var/www/kallikratis-report/index.html"
PUBLISH_TIMEOUT = 120.0


class PublishError(KallikratisError):
    """The page could not be put on the control VM. Exit 1, not 5: a scheduled run must
    fail on this, while red municipalities (exit 5) are the report's finding."""

    exit_code = 1


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
    """Upload *html* to *path* on the control VM atomically; PublishError when it fails."""
    try:
        Guest(target).run(publish_script(path), timeout=PUBLISH_TIMEOUT, stdin=html)
    except GuestError as exc:
        raise PublishError(f"cannot publish the report on {target.host}: {exc.message}") from exc
