#!/bin/sh
# Builds the .rpm with rpmbuild (Debian's `rpm` package has it) from
# packaging/rpm/tailhook.spec, after `cargo build --release` and
# packaging/build-assets.sh.
#
#   packaging/build-rpm.sh OUTPUT.rpm
set -eu
cd "$(dirname "$0")/.."
output=${1:?usage: packaging/build-rpm.sh OUTPUT.rpm}
tree=$(pwd)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
top=$(mktemp -d)
trap 'rm -rf "$top"' EXIT

rpmbuild -bb --quiet \
    --define "_topdir $top" \
    --define "tailhook_tree $tree" \
    --define "tailhook_version $version" \
    packaging/rpm/tailhook.spec
mv "$top"/RPMS/*/tailhook-"$version"-1.*.rpm "$output"
