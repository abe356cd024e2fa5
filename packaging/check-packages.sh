#!/usr/bin/env bash
# Builds the .deb and the .rpm from target/release/tailhook and checks what
# they would do to a server:
#
# 1. contents and modes (dpkg-deb -c), conffiles and scripts (dpkg-deb -I);
# 2. unpacked into a throwaway root with dpkg --root: dpkg records the
#    conffiles, and the installed binary passes `tailhook check` with the
#    installed config and rule packs;
# 3. the unit passes `systemd-analyze verify` (when systemd-analyze exists);
# 4. the setup the maintainer scripts run (user, group, adm, ownership of
#    /etc/tailhook) runs twice in a private mount namespace whose /etc and
#    /var/log are throwaway copies (when unshare works, i.e. as root), so
#    it is tested for real without touching this machine's users; and the
#    scripts keep the admin's enable state (packaging/check-enable-state.sh);
# 5. the .rpm's files, modes and folders, installed into a throwaway root.
#
# Maintainer scripts are not run by dpkg itself: inside a fake root they
# would need a whole system there (sh, useradd) or, chrootless, would change
# this machine. Step 4 runs what they run.
#
#   packaging/check-packages.sh    (after cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "check-packages: $*" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

packaging/build-assets.sh
cargo deb --no-build --locked --output "$work/tailhook.deb" >/dev/null
deb="$work/tailhook.deb"

# 1. Contents, modes, conffiles.
dpkg-deb -c "$deb" >"$work/contents"
expect_entry() { # MODE PATH
    grep -Eq "^$1 root/root .* \./$2\$" "$work/contents" ||
        grep -Eq "^$1 0/0 .* \./$2\$" "$work/contents" ||
        fail "$2 with mode $1 missing from the .deb:$(printf '\n')$(cat "$work/contents")"
}
expect_entry -rwxr-xr-x usr/bin/tailhook
expect_entry -rwxr-xr-x usr/lib/tailhook/tailhook-setup
expect_entry -rw-r----- etc/tailhook/tailhook.toml
expect_entry -rw------- etc/default/tailhook
expect_entry -rw-r--r-- lib/systemd/system/tailhook.service
expect_entry -rw-r--r-- usr/share/bash-completion/completions/tailhook
expect_entry -rw-r--r-- usr/share/zsh/vendor-completions/_tailhook
expect_entry -rw-r--r-- usr/share/fish/vendor_completions.d/tailhook.fish
expect_entry -rw-r--r-- usr/share/man/man1/tailhook.1.gz
expect_entry -rw-r--r-- usr/share/man/man1/tailhook-run.1.gz
expect_entry -rw-r--r-- usr/share/man/man5/tailhook.toml.5.gz
expect_entry -rw-r--r-- usr/share/man/man5/tailhook-rules.5.gz
for pack in rules/*.toml; do
    expect_entry -rw-r--r-- "etc/tailhook/rules.d/$(basename "$pack")"
done

dpkg-deb -I "$deb" >"$work/info"
for script in postinst prerm postrm; do
    grep -q " $script " "$work/info" || fail "no $script in the .deb"
done
dpkg-deb -f "$deb" Depends | grep -q passwd || fail "the .deb must depend on passwd (useradd)"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles >"$work/conffiles"
for conffile in /etc/tailhook/tailhook.toml /etc/tailhook/rules.d/sshd.toml /etc/default/tailhook; do
    grep -qx "$conffile" "$work/conffiles" || fail "$conffile is not a conffile"
done
mkdir "$work/scripts"
dpkg-deb -e "$deb" "$work/scripts"
for script in "$work"/scripts/{postinst,prerm,postrm}; do
    sh -n "$script" || fail "$(basename "$script") does not parse"
done
grep -Eq "systemctl[^#]*( start| enable|--now)" "$work/scripts/postinst" &&
    fail "postinst must not start or enable the service before a webhook is configured"
# The admin's enable state survives upgrade, reinstall and remove+install:
# nothing but purge forgets it, and postinst puts back what was enabled.
grep -Eq "^[^#]*(disable|deb-systemd-helper[^#]* purge)" "$work/scripts/prerm" &&
    fail "prerm must only stop the unit: disabling it forgets the admin's choice"
grep -Eq "^[^#]*deb-systemd-helper[^#]*was-enabled" "$work/scripts/postinst" ||
    fail "postinst must re-enable a unit the admin had enabled (deb-systemd-helper was-enabled)"
awk '/"\$1" = purge/,/^fi/' "$work/scripts/postrm" | grep -q "deb-systemd-helper purge" ||
    fail "postrm purge must forget the enable state (deb-systemd-helper purge)"

# 2. Unpacked into a throwaway root.
root="$work/dpkg-root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
dpkg --root="$root" --log=/dev/null --force-not-root \
    --unpack "$deb" >/dev/null
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Conffiles}\n' tailhook >"$work/registered"
grep -q "/etc/tailhook/tailhook.toml" "$work/registered" || fail "dpkg did not register the conffiles"
[ -f "$root/etc/tailhook/tailhook.toml.dpkg-new" ] || fail "dpkg did not unpack the config as a conffile"
# Conffiles take their names at --configure, which runs postinst; the files
# as they will be are those in the archive.
root="$work/files"
dpkg-deb -x "$deb" "$root"
SOC_WEBHOOK_URL="https://securex-ao.us.security.cisco.com/webhooks/01X?api_key=k" \
    TAILHOOK_RULES__PATHS="[\"$root/etc/tailhook/rules.d\"]" \
    "$root/usr/bin/tailhook" check -c "$root/etc/tailhook/tailhook.toml" >"$work/check" ||
    fail "the installed config and rules fail tailhook check"
grep -q "OK" "$work/check" || fail "tailhook check said: $(cat "$work/check")"
man -l "$root/usr/share/man/man1/tailhook.1.gz" >/dev/null 2>&1 ||
    zcat "$root/usr/share/man/man1/tailhook.1.gz" | grep -q '^\.TH tailhook 1' ||
    fail "tailhook.1.gz is not a man page"
# The section-5 pages render without a single groff warning.
for page in tailhook.toml.5 tailhook-rules.5; do
    if command -v groff >/dev/null; then
        warnings=$(zcat "$root/usr/share/man/man5/$page.gz" | groff -man -Tutf8 -ww -z 2>&1)
        [ -z "$warnings" ] || fail "$page: groff warns: $warnings"
    else
        zcat "$root/usr/share/man/man5/$page.gz" | grep -q '^\.TH ' || fail "$page is not a man page"
    fi
done

# 3. The unit, pointed at the unpacked binary.
if command -v systemd-analyze >/dev/null; then
    sed "s#/usr/bin/tailhook#$root/usr/bin/tailhook#" \
        "$root/lib/systemd/system/tailhook.service" >"$work/tailhook.service"
    systemd-analyze verify --man=no "$work/tailhook.service" ||
        fail "systemd-analyze verify rejects the unit"
else
    echo "check-packages: no systemd-analyze; unit not verified"
fi

# 4. The maintainer scripts' setup, in a private mount namespace.
if unshare --mount true 2>/dev/null; then
    cp -a /etc "$work/etc"
    cp -a "$root/etc/tailhook" "$work/etc/tailhook"
    unshare --mount bash -euo pipefail -c '
        mount --make-rprivate /
        mount --bind "$1/etc" /etc
        mount -t tmpfs tmpfs /var/log   # useradd writes lastlog/faillog there
        ! getent passwd tailhook >/dev/null || userdel tailhook
        "$2/usr/lib/tailhook/tailhook-setup"
        "$2/usr/lib/tailhook/tailhook-setup"
        [ "$(getent passwd tailhook | cut -d: -f7)" = /usr/sbin/nologin ]
        ! getent group adm >/dev/null || id -nG tailhook | grep -qw adm
        [ "$(grep -c "^tailhook:" /etc/passwd)" = 1 ]
        [ "$(stat -c "%U:%G %a" /etc/tailhook)" = "root:tailhook 750" ]
        [ "$(stat -c "%U:%G %a" /etc/tailhook/tailhook.toml)" = "root:tailhook 640" ]
    ' setup "$work" "$root" || fail "tailhook-setup did not set up the user and /etc/tailhook"
    echo "check-packages: maintainer setup OK (user tailhook, group adm, /etc/tailhook root:tailhook), twice"
    packaging/check-enable-state.sh "$work/scripts" "$root/lib/systemd/system/tailhook.service" ||
        fail "the maintainer scripts do not keep the admin's enable state"
    echo "check-packages: enable state kept across upgrade, reinstall and remove+install; forgotten on purge"
else
    echo "check-packages: unshare --mount not permitted; maintainer setup not run"
fi

# 5. The .rpm (rpmbuild and rpm come with Debian's `rpm` package, which
# .ci/run installs): its file list with modes, owners and flags, then
# installed into a throwaway root whose user database has the group
# tailhook (as %pre makes it) and removed again, which proves that the
# package owns its folders.
if command -v rpmbuild >/dev/null; then
    rpm="$work/tailhook.rpm"
    packaging/build-rpm.sh "$rpm"
    # PATH MODE OWNER GROUP CONFIG DOC, as `rpm -qlp --dump` has them.
    rpm -qlp --dump "$rpm" 2>/dev/null | awk '{print $1, $5, $6, $7, $8, $9}' >"$work/rpm-files"
    expect_rpm() { # PATH MODE OWNER GROUP CONFIG DOC
        grep -qx "$*" "$work/rpm-files" ||
            fail "the .rpm lacks \"$*\" (path mode owner group config doc):$(printf '\n')$(cat "$work/rpm-files")"
    }
    expect_rpm /etc/tailhook 040750 root tailhook 0 0
    expect_rpm /etc/tailhook/rules.d 040755 root root 0 0
    expect_rpm /usr/lib/tailhook 040755 root root 0 0
    expect_rpm /usr/share/doc/tailhook 040755 root root 0 0
    expect_rpm /usr/bin/tailhook 0100755 root root 0 0
    expect_rpm /usr/lib/tailhook/tailhook-setup 0100755 root root 0 0
    expect_rpm /etc/tailhook/tailhook.toml 0100640 root tailhook 1 0
    expect_rpm /etc/default/tailhook 0100600 root root 1 0
    for pack in rules/*.toml; do
        expect_rpm "/etc/tailhook/rules.d/$(basename "$pack")" 0100644 root root 1 0
    done
    expect_rpm /usr/lib/systemd/system/tailhook.service 0100644 root root 0 0
    expect_rpm /usr/share/bash-completion/completions/tailhook 0100644 root root 0 0
    expect_rpm /usr/share/zsh/site-functions/_tailhook 0100644 root root 0 0
    expect_rpm /usr/share/fish/vendor_completions.d/tailhook.fish 0100644 root root 0 0
    expect_rpm /usr/share/man/man1/tailhook.1.gz 0100644 root root 0 1
    expect_rpm /usr/share/man/man5/tailhook.toml.5.gz 0100644 root root 0 1
    expect_rpm /usr/share/man/man5/tailhook-rules.5.gz 0100644 root root 0 1
    expect_rpm /usr/share/doc/tailhook/README.md 0100644 root root 0 1
    # Nothing else: no build-id links, no folder of another package.
    # (13: the four folders and the nine files above beside rules and man pages.)
    [ "$(wc -l <"$work/rpm-files")" = "$(($(ls rules/*.toml target/release/assets/man/*.gz | wc -l) + 13))" ] ||
        fail "the .rpm holds more than expected:$(printf '\n')$(cat "$work/rpm-files")"
    rpm -qp --requires "$rpm" 2>/dev/null | grep -qx shadow-utils ||
        fail "the .rpm must require shadow-utils (useradd, for %pre)"
    rpm -qp --scripts "$rpm" 2>/dev/null |
        awk '/^preinstall scriptlet/,/^postinstall scriptlet/' | grep -q "useradd --system" ||
        fail "the .rpm's %pre does not create the user tailhook"
    if [ "$(id -u)" = 0 ]; then
        root="$work/rpm-root"
        mkdir -p "$root/etc"
        printf 'root:x:0:0::/root:/bin/sh\ntailhook:x:990:990::/var/lib/tailhook:/usr/sbin/nologin\n' >"$root/etc/passwd"
        printf 'root:x:0:\ntailhook:x:990:\n' >"$root/etc/group"
        rpm --root "$root" --initdb
        # --nodeps: the throwaway root has no libc; --noscripts: nor a shell.
        rpm --root "$root" -i --nodeps --noscripts "$rpm" 2>"$work/rpm-install" ||
            fail "rpm -i failed: $(cat "$work/rpm-install")"
        for folder in "/etc/tailhook 750 0:990" "/etc/tailhook/rules.d 755 0:0" \
            "/usr/lib/tailhook 755 0:0" "/usr/share/doc/tailhook 755 0:0"; do
            set -- $folder
            [ "$(stat -c "%a %u:%g" "$root$1")" = "$2 $3" ] ||
                fail "$1 installed as $(stat -c "%a %u:%g" "$root$1"), not $2 $3"
            [ "$(rpm --root "$root" -qf "$1")" = "tailhook-$(rpm -qp --qf '%{VERSION}-%{RELEASE}.%{ARCH}' "$rpm" 2>/dev/null)" ] ||
                fail "rpm -qf $1 does not name the package"
        done
        rpm --root "$root" -V --nodeps tailhook || fail "rpm -V finds the installed files changed"
        rpm --root "$root" -e --noscripts tailhook 2>/dev/null || fail "rpm -e failed"
        for folder in /etc/tailhook /usr/lib/tailhook /usr/share/doc/tailhook; do
            [ ! -e "$root$folder" ] || fail "$folder is left behind after rpm -e: the package does not own it"
        done
        echo "check-packages: .rpm installs its folders with their modes and group, and removes them"
    else
        echo "check-packages: not root; the .rpm was not installed into a throwaway root"
    fi
    echo "check-packages: .rpm OK ($(du -k "$rpm" | cut -f1) KiB)"
elif [ "${CI:-}" = true ]; then
    fail "no rpmbuild (Debian's rpm package): the .rpm cannot be built and checked"
else
    echo "check-packages: no rpmbuild (Debian's rpm package); .rpm not built"
fi
echo "check-packages: .deb OK ($(du -k "$deb" | cut -f1) KiB)"
