#!/usr/bin/env bash
# Fetch onnxruntime's C/C++ headers (ORT_API_VERSION 29) at build time: they ship inside the official
# Android AAR that the npm package com.github.asus4.onnxruntime carries. Nothing is committed.
# usage: fetch_ort_headers.sh DEST   -> DEST/headers/onnxruntime_c_api.h ...
set -euo pipefail
dest="$1"
pkg="${EDGECPM_ORT_NPM:-com.github.asus4.onnxruntime@0.4.9}"
[ -f "$dest/headers/onnxruntime_c_api.h" ] && exit 0
tmp="$dest/.fetch"
rm -rf "$tmp" && mkdir -p "$tmp"
(cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/Plugins/Android/onnxruntime.aar
(cd "$tmp" && python3 -c "import zipfile; zipfile.ZipFile('package/Plugins/Android/onnxruntime.aar').extractall('aar', [n for n in zipfile.ZipFile('package/Plugins/Android/onnxruntime.aar').namelist() if n.startswith('headers/')])")
mkdir -p "$dest"
rm -rf "$dest/headers" && mv "$tmp/aar/headers" "$dest/headers"
rm -rf "$tmp"
echo "onnxruntime headers in $dest/headers ($(grep -m1 'define ORT_API_VERSION' "$dest/headers/onnxruntime_c_api.h"))"
