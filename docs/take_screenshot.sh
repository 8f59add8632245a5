#!/usr/bin/env bash
# Take docs/jupyterlab.png: the course open in JupyterLab, rendered by a real headless browser.
#
#   docs/take_screenshot.sh [NOTEBOOK] [OUTPUT]
#
# NOTEBOOK  a file in notebooks/ (default 02_involution_loops.ipynb, else the first notebook)
# OUTPUT    the PNG to write (default docs/jupyterlab.png)
#
# Needs chromium (Debian: apt-get install -y chromium) and the project's .venv (make setup).
# JupyterLab listens on 127.0.0.1 only, on a free port, with a random token, in throwaway
# config/runtime/settings folders; it is shut down at the end (killed if it does not stop).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}"
NOTEBOOK="${1:-02_involution_loops.ipynb}"
OUTPUT="${2:-$REPO/docs/jupyterlab.png}"
MAX_BYTES=400000

[ -x "$PYTHON" ] || { echo "no Python at $PYTHON: run 'make setup' first" >&2; exit 1; }
[ -n "$CHROMIUM" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 1; }
if [ ! -f "$REPO/notebooks/$NOTEBOOK" ]; then
    NOTEBOOK="$(cd "$REPO/notebooks" && ls [0-9][0-9]_*.ipynb | head -n 1)"
    [ -n "$NOTEBOOK" ] || { echo "no notebooks in $REPO/notebooks" >&2; exit 1; }
fi

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
TOKEN="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')"

# Quiet, reproducible JupyterLab: no news toast, no update check, default light theme.
mkdir -p "$WORK/config" "$WORK/runtime" "$WORK/workspaces" "$WORK/settings/@jupyterlab/apputils-extension"
echo '{"fetchNews": "false", "checkForUpdates": false}' > "$WORK/settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"

ROOT_FLAG=()
[ "$(id -u)" = "0" ] && ROOT_FLAG=(--allow-root)

JUPYTER_CONFIG_DIR="$WORK/config" JUPYTER_RUNTIME_DIR="$WORK/runtime" \
JUPYTERLAB_SETTINGS_DIR="$WORK/settings" JUPYTERLAB_WORKSPACES_DIR="$WORK/workspaces" \
"$PYTHON" -m jupyterlab --no-browser "${ROOT_FLAG[@]}" \
    --ServerApp.ip=127.0.0.1 --ServerApp.port="$PORT" --ServerApp.port_retries=0 \
    --IdentityProvider.token="$TOKEN" --ServerApp.root_dir="$REPO" \
    --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
    --LabApp.extension_manager=readonly --FileCheckpoints.root_dir="$WORK/checkpoints" \
    > "$WORK/jupyterlab.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 60); do
    if "$PYTHON" - "$PORT" "$TOKEN" <<'EOF' 2>/dev/null; then break; fi
import sys, urllib.request
port, token = sys.argv[1], sys.argv[2]
request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"})
urllib.request.urlopen(request, timeout=2).read()
EOF
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "JupyterLab exited:" >&2; tail -n 20 "$WORK/jupyterlab.log" >&2; exit 1; }
    sleep 0.5
done

URL="http://127.0.0.1:$PORT/lab/tree/notebooks/$NOTEBOOK?token=$TOKEN"
for BUDGET in 15000 30000 60000; do
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --hide-scrollbars --user-data-dir="$WORK/chromium-$BUDGET" --window-size=1400,900 \
        --virtual-time-budget="$BUDGET" --screenshot="$WORK/shot.png" "$URL" \
        > "$WORK/chromium.log" 2>&1 || true
    # A page that has not rendered yet is nearly one colour: count distinct colours.
    COLOURS="$("$PYTHON" -c 'import sys; from PIL import Image; print(len(Image.open(sys.argv[1]).convert("RGB").getcolors(1 << 24) or []))' "$WORK/shot.png" 2>/dev/null || echo 0)"
    echo "virtual time budget ${BUDGET} ms: ${COLOURS} colours"
    [ "$COLOURS" -gt 500 ] && break
done
[ "${COLOURS:-0}" -gt 500 ] || { echo "the page did not render; see $WORK/chromium.log" >&2; tail -n 20 "$WORK/chromium.log" >&2; exit 1; }

# Keep the PNG small: re-save optimised, and reduce to a 256-colour palette if still too big.
"$PYTHON" - "$WORK/shot.png" "$OUTPUT" "$MAX_BYTES" <<'EOF'
import os, sys
from PIL import Image
source, target, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
image = Image.open(source).convert("RGB")
image.save(target, optimize=True)
if os.path.getsize(target) > max_bytes:
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
print(f"wrote {target}: {image.size[0]}x{image.size[1]}, {os.path.getsize(target)} bytes")
EOF

"$PYTHON" - "$PORT" "$TOKEN" <<'EOF' || true
import sys, urllib.request
port, token = sys.argv[1], sys.argv[2]
request = urllib.request.Request(f"http://127.0.0.1:{port}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"})
urllib.request.urlopen(request, timeout=5).read()
EOF
for _ in $(seq 1 20); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
