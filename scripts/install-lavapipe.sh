#!/usr/bin/env bash
# Installs Mesa 25's lavapipe (a conformant software Vulkan device) from bookworm-backports,
# so glim's kernels run for real on a machine without a GPU. Bookworm's own Mesa 22 works
# too but is about sixteen times slower, too slow for the model tests.
# Does nothing where a Mesa >= 25 Vulkan driver is already installed.
set -euo pipefail

installed=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [[ "$installed" =~ ^(2[5-9]|[3-9][0-9])\. ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-lavapipe: no apt-get here; install Mesa's Vulkan drivers (lavapipe) yourself" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
# Use the mirror the machine's own Debian entries already use.
mirror=$(grep -hoE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
if [ -z "$mirror" ]; then
    mirror=$(grep -hoE '^deb +\S+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

if ! grep -rqs "${codename}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" "$codename" | $sudo tee /etc/apt/sources.list.d/glim-backports.sources >/dev/null
fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q -t "${codename}-backports" mesa-vulkan-drivers
