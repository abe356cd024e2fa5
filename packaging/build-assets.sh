#!/bin/sh
# Renders what the packages ship beside the binary, from the binary itself
# (clap definitions): shell completions and gzipped man pages (sections 1
# and 5; the section-5 sources are packaging/man/, embedded in the binary).
#
#   packaging/build-assets.sh [BINARY] [OUT_DIR]
#
# Defaults: target/release/tailhook and target/release/assets, where the
# Cargo.toml package metadata (cargo-deb) and packaging/rpm/tailhook.spec
# expect them.
set -eu
cd "$(dirname "$0")/.."
binary=${1:-target/release/tailhook}
out=${2:-target/release/assets}

if [ ! -x "$binary" ]; then
    echo "build-assets: $binary: not found; build it first (cargo build --release)" >&2
    exit 1
fi
rm -rf "$out"
mkdir -p "$out/completions" "$out/man"
"$binary" generate completions bash >"$out/completions/tailhook.bash"
"$binary" generate completions zsh >"$out/completions/_tailhook"
"$binary" generate completions fish >"$out/completions/tailhook.fish"
"$binary" generate man "$out/man"
# -n: no name or time stamp inside, so the same input gives the same package.
gzip -9nf "$out"/man/*.1 "$out"/man/*.5
