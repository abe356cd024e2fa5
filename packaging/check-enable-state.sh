#!/usr/bin/env bash
# Runs the .deb's maintainer scripts through an install, an admin's
# `systemctl enable`, an upgrade, a reinstall, a remove followed by an
# install, and a purge, and checks after each that the unit is enabled
# exactly when the admin wanted it. Everything happens in a private mount
# namespace whose systemd folders are empty tmpfs: the machine's units,
# links and systemd are never touched, and `systemctl` reaches only files
# (--root=/), as dpkg's scripts would on a real system with systemd running.
#
#   packaging/check-enable-state.sh SCRIPTS_DIR UNIT_FILE    (as root)
set -euo pipefail
scripts=$(realpath "$1")
unit_source=$(realpath "$2")

exec unshare --mount bash -euo pipefail -c '
scripts=$1
unit_source=$2
mount --make-rprivate /
for dir in /etc/systemd/system /var/lib/systemd /usr/lib/systemd/system \
    /usr/lib/tailhook /run/systemd /run/enable-state-bin; do
    mkdir -p "$dir"
    mount -t tmpfs tmpfs "$dir"
done
# The scripts take this as "systemd runs here".
mkdir /run/systemd/system
# tailhook-setup (user and group) is checked elsewhere; here it must not
# change the machine.
printf "#!/bin/sh\nexit 0\n" >/usr/lib/tailhook/tailhook-setup
chmod 755 /usr/lib/tailhook/tailhook-setup
# systemctl on files only: no daemon to reload, start or stop.
cat >/run/enable-state-bin/systemctl <<"WRAPPER"
#!/bin/sh
args=""
for arg in "$@"; do
    case "$arg" in
        daemon-reload | try-restart | restart | start | stop) exit 0 ;;
        --now | --no-reload) ;;
        *) args="$args $arg" ;;
    esac
done
exec /usr/bin/systemctl --root=/ $args
WRAPPER
chmod 755 /run/enable-state-bin/systemctl
export PATH=/run/enable-state-bin:$PATH DPKG_MAINTSCRIPT_PACKAGE=tailhook

unit=/usr/lib/systemd/system/tailhook.service
link=/etc/systemd/system/multi-user.target.wants/tailhook.service
run() { # SCRIPT ARGS...
    DPKG_MAINTSCRIPT_NAME=$1 sh -e "$scripts/$1" "${@:2}" >/dev/null
}
unpack() { cp "$unit_source" "$unit"; }
expect() { # enabled|disabled WHEN
    if [ -L "$link" ]; then state=enabled; else state=disabled; fi
    [ "$state" = "$1" ] || { echo "check-enable-state: $2: the unit is $state, expected $1" >&2; exit 1; }
}

unpack; run postinst configure
expect disabled "after the first install"
systemctl enable tailhook.service 2>/dev/null
expect enabled "after systemctl enable"
run prerm upgrade 0.1.0; unpack; run postinst configure 0.1.0
expect enabled "after an upgrade (or apt install --reinstall)"
run prerm remove; rm "$unit"; run postrm remove
unpack; run postinst configure 0.1.0
expect enabled "after apt remove, then apt install"
systemctl disable tailhook.service 2>/dev/null
run prerm upgrade 0.1.0; unpack; run postinst configure 0.1.0
expect disabled "after an upgrade of a unit the admin disabled"
systemctl enable tailhook.service 2>/dev/null
run prerm remove; rm "$unit"; run postrm remove; run postrm purge
expect disabled "after apt purge"
unpack; run postinst configure
expect disabled "after an install that follows a purge"
' enable-state "$scripts" "$unit_source"
