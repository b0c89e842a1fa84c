#!/usr/bin/env bash
# Runs installed.e2e.mjs against an installed program, as a person starts it: under Xvfb and a
# session bus of its own, with a notification service (dunst) and tauri-driver on 4444. Used by
# installed.sh (the .deb's /usr/bin/p2pds-desktop) and appimage.sh (the AppImage file).
#   bash tests/e2e/as-installed.sh PROGRAM
# Environment passed on: XDG_CONFIG_HOME (where "Start at login" writes; required),
# XDG_CACHE_HOME, APP_EXEC (what the autostart entry must start; default PROGRAM).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
driver="$(command -v tauri-driver || echo "$HOME/.cargo/bin/tauri-driver")"
: "${XDG_CONFIG_HOME:?set XDG_CONFIG_HOME to a folder of the test}"
APP_BIN="$1" xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session -- bash -c '
  dunst >/dev/null 2>&1 & n=$!
  "$0" --port 4444 --native-port 4445 >/dev/null 2>&1 & d=$!
  for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/4444) 2>/dev/null && break; sleep 0.1; done
  cd "$1" && node --test --test-reporter=tap installed.e2e.mjs
  s=$?; kill $d $n; exit $s' "$driver" "$here"
