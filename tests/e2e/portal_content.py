"""What a citizen or an employee makes on a municipality's portal and e-learning (a post with an
approved comment, an uploaded file, a Kolibri learner), made and read on the VM itself:
WordPress through PHP as www-data, Kolibri through its own Django models, the files by path.

Shared by the backup tests: `test_backup` (backup) and `test_lifecycle` (restore-test, the whole
cycle: destroy with a final backup, onboard again, restore)."""

from __future__ import annotations

import json
import shlex
import uuid
from dataclasses import dataclass

from tests.e2e.conftest import Fleet

KOLIBRI = "/opt/kallikratis/venvs/kolibri/bin/kolibri"
KINDS = ["post", "comment", "upload", "learner"]


def php(fleet: Fleet, slug: str, domain: str, body: str) -> str:
    """Run PHP inside *slug*'s WordPress (as www-data, as the portal serves it); its output."""
    code = (
        f'$_SERVER["HTTP_HOST"] = $_SERVER["SERVER_NAME"] = "{domain}"; $_SERVER["HTTPS"] = "on";'
        ' require "/usr/share/wordpress/wp-load.php";' + body
    )
    return fleet.ssh(slug, "sudo -u www-data php -r " + shlex.quote(code)).strip()


def kolibri(fleet: Fleet, slug: str, python: str) -> str:
    """Kolibri's Django shell as its own user (Kolibri's models, not its files)."""
    cmd = (
        f"sudo env KOLIBRI_HOME=/var/lib/kolibri runuser -u kolibri -- {KOLIBRI} manage shell "
        f"--command {shlex.quote(python)}"
    )
    return fleet.ssh(slug, cmd, timeout=600).strip()


@dataclass
class Made:
    """What was made on the portal before the backup."""

    slug: str
    domain: str
    post_id: int
    title: str
    comment: str
    upload: str  # the uploaded file's path on the VM
    upload_text: str
    learner: str


def make(fleet: Fleet, slug: str, domain: str) -> Made:
    tag = uuid.uuid4().hex[:8]
    title, comment, learner = f"kk-backup-{tag}", f"kk-comment-{tag}", f"kk-learner-{tag}"
    upload_text = f"uploaded {tag}\n"
    out = php(
        fleet,
        slug,
        domain,
        'require_once ABSPATH . "wp-admin/includes/file.php";'
        ' require_once ABSPATH . "wp-admin/includes/media.php";'
        ' require_once ABSPATH . "wp-admin/includes/image.php";'
        f' $p = wp_insert_post(["post_title" => "{title}", "post_status" => "publish",'
        ' "post_content" => "Before the backup."], true);'
        f' wp_insert_comment(["comment_post_ID" => $p, "comment_content" => "{comment}",'
        ' "comment_approved" => 1, "comment_author" => "Πολίτης"]);'
        ' $t = wp_tempnam("kk"); file_put_contents($t, ' + json.dumps(upload_text) + ");"
        f' $a = media_handle_sideload(["name" => "{title}.txt", "tmp_name" => $t], $p);'
        ' if (is_wp_error($a)) { echo "ERROR ", $a->get_error_message(); exit(1); }'
        ' echo $p, " ", get_attached_file($a);',
    )
    post, upload = out.split(" ", 1)
    kolibri(
        fleet,
        slug,
        "from kolibri.core.auth.models import Facility, FacilityUser;"
        f" FacilityUser.objects.create(username='{learner}', full_name='Μαθητής',"
        " facility=Facility.get_default_facility())",
    )
    return Made(slug, domain, int(post), title, comment, upload, upload_text, learner)


def present(fleet: Fleet, made: Made) -> dict[str, bool]:
    """Which of the four kinds are on the VM now, each read where the application keeps it."""
    wp = php(
        fleet,
        made.slug,
        made.domain,
        f" $p = get_post({made.post_id});"
        ' $c = $p ? get_comments(["post_id" => $p->ID, "status" => "approve"]) : [];'
        ' echo json_encode(["post" => $p && $p->post_status === "publish"'
        f' && $p->post_title === "{made.title}",'
        f' "comment" => in_array("{made.comment}",'
        " array_map(fn($x) => $x->comment_content, $c))]);",
    )
    found = json.loads(wp)
    text = fleet.ssh(made.slug, f"sudo cat {shlex.quote(made.upload)} 2>/dev/null || true")
    found["upload"] = text == made.upload_text
    learners = fleet.ssh(
        made.slug,
        "sudo sqlite3 /var/lib/kolibri/db.sqlite3 "
        + shlex.quote(
            f"select count(*) from kolibriauth_facilityuser where username='{made.learner}'"
        ),
    )
    found["learner"] = learners.strip() == "1"
    return found


def all_present(fleet: Fleet, made: Made) -> bool:
    return present(fleet, made) == dict.fromkeys(KINDS, True)
