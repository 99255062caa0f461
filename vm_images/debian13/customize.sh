#!/bin/sh
# Runs inside the image (chroot) after files/ has been copied in.
set -eu

# Timers and jobs that only cost boot time on a short-lived, centrally patched VM.
systemctl mask apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
    e2scrub_all.timer e2scrub_all.service e2scrub_reap.service >/dev/null 2>&1

systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1

# grub-pc upgrades must reinstall GRUB on the virtio boot disk without asking.
echo "grub-pc grub-pc/install_devices multiselect /dev/vda" | debconf-set-selections
