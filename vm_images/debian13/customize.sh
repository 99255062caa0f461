#!/bin/sh
# Runs inside the image (chroot) after files/ has been copied in.
set -eu

# Timers and jobs that only cost boot time on a centrally patched VM; binfmt_misc is unused;
# grub-common.service only records a successful boot (GRUB_RECORDFAIL_TIMEOUT is 0 anyway);
# host keys come from cloud-init (injected, or ssh_genkeytypes), never from sshd-keygen.
systemctl mask apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
    e2scrub_all.timer e2scrub_all.service e2scrub_reap.service grub-common.service \
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
    sshd-keygen.service \
    >/dev/null 2>&1

systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1

# grub-pc upgrades must reinstall GRUB on the virtio boot disk without asking.
echo "grub-pc grub-pc/install_devices multiselect /dev/vda" | debconf-set-selections

# Do the first-boot "update" jobs now (ldconfig, hwdb, journal catalog) and mark /etc and /var
# as up to date, so ConditionNeedsUpdate= skips them at boot.
ldconfig
systemd-hwdb update
journalctl --update-catalog
/usr/lib/systemd/systemd-update-done

# Every Python module cloud-init imports must have valid bytecode (no compiling at first boot).
python3 -m compileall -q "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
    /usr/lib/python3/dist-packages >/dev/null

# The locales roles/base asks for by default (base_locales), generated now: locale-gen costs
# ~40 s of a first deploy under TCG; the role still generates any other a fleet names.
sed -i -E 's/^# *((el_GR|en_US)\.UTF-8 UTF-8)$/\1/' /etc/locale.gen
locale-gen >/dev/null

# Rebuild the initramfs with MODULES=list and the module blacklist.
update-initramfs -u >/dev/null

# The stack's Python applications (see wheels.txt), built offline from the baked wheelhouse.
if [ -d /opt/kallikratis/wheels ]; then
    for app in "datasette datasette sqlite-utils" "kolibri kolibri"; do
        set -- $app
        venv=/opt/kallikratis/venvs/$1; shift
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --no-index --find-links /opt/kallikratis/wheels "$@"
    done
fi

# The Prometheus stack is baked into every VM (one image) but runs on the control VM only:
# masked, not just disabled, so nothing (a package upgrade's postinst, a stray `systemctl start`,
# a dependency) starts it on a municipality VM; roles/monitoring unmasks it on control.
systemctl mask prometheus.service prometheus-alertmanager.service \
    prometheus-blackbox-exporter.service >/dev/null 2>&1

# Debian's borgmatic enables a daily timer running every action (create, prune, compact, check)
# with whatever config it finds. Backups are run from the controller (`kallikratis backup`,
# `kallikratis schedule backup`), and prune must never run from a VM against its append-only
# repository (roles/backup): masked.
systemctl mask borgmatic.timer borgmatic.service >/dev/null 2>&1

# Baked application services stay off until a role enables them: a fresh VM boots only what
# provisioning needs (under TCG every service costs seconds before SSH answers).
for unit in mariadb.service nginx.service prometheus-node-exporter.service prometheus-node-exporter-apt.timer \
    unattended-upgrades.service nftables.service certbot.timer $(cd /usr/lib/systemd/system && ls php*-fpm.service 2>/dev/null); do
    systemctl disable "$unit" >/dev/null 2>&1 || true
done
