#!/usr/bin/env bash
# The package as a person installs it: installs the .deb with the system's package tool (apt,
# which also checks its declared dependencies), starts the installed app under Xvfb and a
# session bus through tauri-driver (installed.e2e.mjs: the window renders, the tray icon is
# there, "Start at login" writes an entry that starts the installed program, notifications
# reach the desktop's notification service), then removes the package and checks that nothing of it is left.
#   bash tests/e2e/installed.sh PATH/TO/p2pds_VERSION_ARCH.deb
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deb="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
sudo=(); [[ $(id -u) -ne 0 ]] && sudo=(sudo)

if dpkg -s p2pds >/dev/null 2>&1; then
  echo "installed: p2pds is already installed here; remove it first (apt-get remove p2pds)" >&2
  exit 1
fi
echo "installed: apt-get install $deb"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb" >/dev/null
# Removed again whatever happens below.
trap '"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q p2pds >/dev/null 2>&1 || true' EXIT
files="$(dpkg -L p2pds)"
status=0
for f in /usr/bin/p2pds-desktop /usr/bin/p2pds-window /usr/bin/p2pds /usr/share/applications/org.p2pds.desktop.desktop \
  /usr/share/icons/hicolor/256x256/apps/p2pds.png; do
  [[ -e "$f" ]] || { echo "installed: $f is missing" >&2; status=1; }
done
if command -v desktop-file-validate >/dev/null; then
  desktop-file-validate /usr/share/applications/org.p2pds.desktop.desktop || status=1
fi
/usr/bin/p2pds --version >/dev/null || { echo "installed: p2pds --version failed" >&2; status=1; }
# p2pds: links open with the app (the desktop database, updated by apt's trigger, says so).
if [[ -f /usr/share/applications/mimeinfo.cache ]]; then
  grep -q '^x-scheme-handler/p2pds=.*org.p2pds.desktop.desktop' /usr/share/applications/mimeinfo.cache ||
    { echo "installed: p2pds: links are not registered to the app" >&2; status=1; }
fi

if [[ $status -eq 0 ]]; then
  config="$(mktemp -d)"
  XDG_CONFIG_HOME="$config" bash "$here/as-installed.sh" /usr/bin/p2pds-desktop || status=$?
  rm -rf "$config"
fi

echo "installed: apt-get remove p2pds"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q p2pds >/dev/null
trap - EXIT
if dpkg -s p2pds >/dev/null 2>&1; then
  echo "installed: p2pds is still installed after removal" >&2
  status=1
fi
while read -r f; do
  [[ -f "$f" ]] && { echo "installed: $f was left behind" >&2; status=1; }
done <<<"$files"
[[ $status -eq 0 ]] && echo "installed: installed, ran and removed cleanly"
exit "$status"
