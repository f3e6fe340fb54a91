#!/usr/bin/env bash
# Refreshes the GraphiQL page's vendored assets (assets/graphiql/) from the
# npm registry, or checks them against their manifest.
#
#   scripts/vendor-graphiql.sh          download the pinned versions with
#                                       `npm pack`, copy the minified builds
#                                       and licenses, rewrite MANIFEST.tsv
#   scripts/vendor-graphiql.sh --check  offline: every vendored file matches
#                                       the sha256 MANIFEST.tsv records
#
# To move to new versions, change the pins below, run the script, then run
# `cargo test --lib graphiql` (it checks the binary serves what the manifest
# records) and the browser test `cargo test --test it graphiql`.
set -euo pipefail
cd "$(dirname "$0")/.."

# GraphiQL 4 is the last major with a UMD build (5 is ESM with Monaco
# workers); its UMD build expects React 18's UMD globals (19 has none).
GRAPHIQL_VERSION=4.1.2
REACT_VERSION=18.3.1

DEST=assets/graphiql
MANIFEST=$DEST/MANIFEST.tsv
# Only licenses the project accepts for code it ships.
ALLOWED_LICENSES='^(MIT)$'

if [ "${1:-}" = "--check" ]; then
    tail -n +2 "$MANIFEST" | while IFS=$'\t' read -r package version license source vendored sha256; do
        actual=$(sha256sum "$DEST/$vendored" | cut -d' ' -f1)
        if [ "$actual" != "$sha256" ]; then
            echo "$DEST/$vendored ($package@$version $source): sha256 $actual, manifest says $sha256" >&2
            exit 1
        fi
    done
    echo "assets/graphiql matches $MANIFEST"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# package@version, then the files to vendor from its tarball (minified only).
vendor() {
    local package=$1 version=$2
    shift 2
    # npm pack checks the tarball against the registry's integrity hash.
    local tarball
    tarball=$(cd "$work" && npm pack --silent "$package@$version" | tail -1)
    mkdir -p "$work/$package" "$DEST/$package"
    tar -xzf "$work/$tarball" -C "$work/$package"
    local license
    license=$(node -p "require('$work/$package/package/package.json').license")
    if ! [[ $license =~ $ALLOWED_LICENSES ]]; then
        echo "$package@$version is licensed $license, not one $0 accepts" >&2
        exit 1
    fi
    rm -f "$DEST/$package"/*
    for source in "$@" LICENSE; do
        local vendored
        vendored="$package/$(basename "$source")"
        cp "$work/$package/package/$source" "$DEST/$vendored"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$package" "$version" "$license" "$source" "$vendored" \
            "$(sha256sum "$DEST/$vendored" | cut -d' ' -f1)" >>"$work/manifest"
    done
}

: >"$work/manifest"
vendor graphiql "$GRAPHIQL_VERSION" graphiql.min.js graphiql.min.css
vendor react "$REACT_VERSION" umd/react.production.min.js
vendor react-dom "$REACT_VERSION" umd/react-dom.production.min.js

{
    printf 'package\tversion\tlicense\tsource\tvendored\tsha256\n'
    cat "$work/manifest"
} >"$MANIFEST"
echo "vendored into $DEST:"
column -t -s $'\t' "$MANIFEST"
