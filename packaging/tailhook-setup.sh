#!/bin/sh
# Gives the service what it needs on this machine; run as root by the .deb
# postinst and install.sh after the files are in place, and as the .rpm's
# %pre before them (so rpm unpacks /etc/tailhook with group tailhook).
# Idempotent: a second run changes nothing.
#
# - the system user and group `tailhook` (no login, no home of its own);
# - on first creation, membership of `adm`, which owns the logs tailhook reads
#   on Debian/Ubuntu (/var/log/auth.log, syslog, mail.log, …: root:adm 0640);
# - /etc/tailhook readable by that group only: the config may hold a webhook
#   URL with its api_key.
set -eu

ETC=/etc/tailhook

if ! getent group tailhook >/dev/null; then
    groupadd --system tailhook
fi
if ! getent passwd tailhook >/dev/null; then
    useradd --system --gid tailhook --no-create-home --home-dir /var/lib/tailhook \
        --shell /usr/sbin/nologin --comment "tailhook log forwarder" tailhook
    # Only when the user is new: an administrator who took it out of adm
    # keeps it out across upgrades.
    if getent group adm >/dev/null; then
        usermod --append --groups adm tailhook
    fi
fi

if [ -d "$ETC" ]; then
    chown root:tailhook "$ETC"
    chmod 0750 "$ETC"
    if [ -f "$ETC/tailhook.toml" ]; then
        chown root:tailhook "$ETC/tailhook.toml"
        chmod 0640 "$ETC/tailhook.toml"
    fi
fi
