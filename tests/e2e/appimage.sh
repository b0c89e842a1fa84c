#!/usr/bin/env bash
# The AppImage as a person uses it: one file, downloaded and opened. Checks that it unpacks
# (--appimage-extract) with its entry, desktop entry and icon; then, with a cache folder holding
# a copy left by another version, starts it under Xvfb and a session bus (as-installed.sh runs
# installed.e2e.mjs, as for the .deb: the window renders, the tray icon is there, a second start
# hands a link over, "Start at login" starts the AppImage file, notifications reach the
# desktop); and that afterwards the cache holds this version's copy only.
#   bash tests/e2e/appimage.sh PATH/TO/P2PDS-VERSION-ARCH.AppImage
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Its real path: what it knows itself by (/proc/self/exe), so what "Start at login" names.
image="$(readlink -f "$1")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
fail() { echo "appimage: $*" >&2; status=1; }

[[ -x "$image" ]] || { echo "appimage: $image is not an executable file" >&2; exit 1; }
(cd "$work" && "$image" --appimage-extract >/dev/null) || fail "--appimage-extract failed"
for f in AppRun org.p2pds.desktop.desktop p2pds.png .DirIcon usr/bin/p2pds-desktop usr/bin/p2pds-window \
  usr/bin/p2pds usr/share/icons/hicolor/256x256/apps/p2pds.png; do
  [[ -e "$work/squashfs-root/$f" ]] || fail "$f is missing from the image"
done
if command -v desktop-file-validate >/dev/null; then
  desktop-file-validate "$work/squashfs-root/org.p2pds.desktop.desktop" || status=1
fi
"$work/squashfs-root/usr/bin/p2pds" --version >/dev/null || fail "p2pds --version failed"

# On a system without a library the app needs, the AppImage says which and stops: its AppRun,
# with a program linked to a library that is then taken away.
mkdir -p "$work/bare/usr/bin"
cp "$work/squashfs-root/AppRun" "$work/bare/AppRun"
echo 'int gone(void) { return 0; }' | gcc -x c -shared -fPIC -o "$work/libp2pdsgone.so" -
echo 'int gone(void); int main(void) { return gone(); }' |
  gcc -x c -o "$work/bare/usr/bin/p2pds-desktop" - -L"$work" -lp2pdsgone
cp "$work/bare/usr/bin/p2pds-desktop" "$work/bare/usr/bin/p2pds-window"
rm "$work/libp2pdsgone.so"
said="$("$work/bare/AppRun" 2>&1 >/dev/null)" && fail "AppRun started without a library"
[[ "$said" == *"libp2pdsgone.so"*"WebKitGTK 4.1"* ]] || fail "AppRun did not say which library is missing: $said"

cache="$work/cache"
old="$cache/p2pds/appimage/0123456789abcdef"
mkdir -p "$old/usr/bin"
echo "an older version's copy" >"$old/AppRun"
if [[ $status -eq 0 ]]; then
  mkdir "$work/config"
  XDG_CACHE_HOME="$cache" XDG_CONFIG_HOME="$work/config" bash "$here/as-installed.sh" "$image" || status=$?
fi

# One copy in the cache: this version's, whole; the other version's is gone.
copies=("$cache"/p2pds/appimage/*)
if [[ ${#copies[@]} -ne 1 ]]; then
  fail "the cache holds ${#copies[@]} entries, not 1: ${copies[*]}"
elif [[ ! -x "${copies[0]}/usr/bin/p2pds-desktop" || ! "$(basename "${copies[0]}")" =~ ^[0-9a-f]{16}$ ]]; then
  fail "the cache's copy is not this version's, whole: ${copies[0]}"
fi
[[ $status -eq 0 ]] && echo "appimage: unpacked, opened and ran; the cache holds one copy"
exit "$status"
