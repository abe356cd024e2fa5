#!/bin/sh
# Installs tailhook from this source tree on a Linux server without .deb or
# .rpm packages: the same files, user and unit as the packages. Safe to run
# again: the config and rule files you changed are kept (the shipped version
# is written beside them as FILE.new).
#
#   cargo build --release && sudo ./install.sh
#
# Options:
#   --prefix DIR    bin/, lib/ and share/ go under DIR (default /usr/local)
#   --destdir DIR   stage every file under DIR (also $DESTDIR), for packaging
#                   or a look: no user is created, nothing is chown'ed, and
#                   systemd is not told
#   --binary FILE   the tailhook to install (default target/release/tailhook)
#   --unit-dir DIR  where the systemd unit goes (default /etc/systemd/system)
#
# The service is never enabled or started: set the webhook URL first (see
# README.md, "Run as a service").
set -eu
cd "$(dirname "$0")"

prefix=/usr/local
destdir=${DESTDIR:-}
binary=target/release/tailhook
unit_dir=/etc/systemd/system
while [ $# -gt 0 ]; do
    case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --destdir) destdir=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --unit-dir) unit_dir=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$prefix" in
/*) ;;
*) echo "install.sh: --prefix must be an absolute path" >&2; exit 2 ;;
esac
if [ ! -x "$binary" ]; then
    echo "install.sh: $binary: not found; run cargo build --release first" >&2
    exit 1
fi

assets=$(mktemp -d)
trap 'rm -rf "$assets"' EXIT
packaging/build-assets.sh "$binary" "$assets"

etc=$destdir/etc/tailhook
share=$destdir$prefix/share

# A file the administrator may have changed: installed if absent or still
# identical, else left alone with the shipped version beside it.
install_config() { # MODE SOURCE DEST
    if [ ! -e "$3" ] || cmp -s "$2" "$3"; then
        install -m "$1" "$2" "$3"
    else
        install -m "$1" "$2" "$3.new"
        echo "install.sh: kept your $3; the shipped version is $3.new"
    fi
}

install -d "$destdir$prefix/bin" "$destdir$prefix/lib/tailhook" "$etc/rules.d" \
    "$destdir/etc/default" "$destdir$unit_dir" "$share/bash-completion/completions" \
    "$share/zsh/site-functions" "$share/fish/vendor_completions.d" "$share/man/man1" "$share/man/man5"
install -m 755 "$binary" "$destdir$prefix/bin/tailhook"
install -m 755 packaging/tailhook-setup.sh "$destdir$prefix/lib/tailhook/tailhook-setup"
install_config 640 config/tailhook.toml "$etc/tailhook.toml"
for pack in rules/*.toml; do
    install_config 644 "$pack" "$etc/rules.d/$(basename "$pack")"
done
[ -e "$destdir/etc/default/tailhook" ] ||
    install -m 600 packaging/tailhook.default "$destdir/etc/default/tailhook"
sed "s#/usr/bin/tailhook#$prefix/bin/tailhook#g" packaging/tailhook.service >"$assets/tailhook.service"
install -m 644 "$assets/tailhook.service" "$destdir$unit_dir/tailhook.service"
install -m 644 "$assets/completions/tailhook.bash" "$share/bash-completion/completions/tailhook"
install -m 644 "$assets/completions/_tailhook" "$share/zsh/site-functions/_tailhook"
install -m 644 "$assets/completions/tailhook.fish" "$share/fish/vendor_completions.d/tailhook.fish"
install -m 644 "$assets"/man/*.1.gz "$share/man/man1/"
install -m 644 "$assets"/man/*.5.gz "$share/man/man5/"

if [ -n "$destdir" ]; then
    echo "install.sh: staged under $destdir; on the server, run $prefix/lib/tailhook/tailhook-setup as root"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: not root: run $prefix/lib/tailhook/tailhook-setup as root to create the user tailhook" >&2
    exit 1
fi
"$prefix/lib/tailhook/tailhook-setup"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "install.sh: installed. Set SOC_WEBHOOK_URL in /etc/default/tailhook, then:"
echo "  (set -a; . /etc/default/tailhook; $prefix/bin/tailhook check) && systemctl enable --now tailhook"
