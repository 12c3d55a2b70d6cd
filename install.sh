#!/usr/bin/env bash
# One-command install of neurodrive and everything it needs (Debian/Ubuntu, CPU only).
#   bash install.sh          # system / active Python environment
# Prints one line per step; apt and pip output goes to a log file (NEURODRIVE_INSTALL_LOG).
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
LOG=${NEURODRIVE_INSTALL_LOG:-${TMPDIR:-/tmp}/neurodrive-install.log}
TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}   # PyTorch's CPU-only wheels (no multi-GB CUDA libraries)
: >"$LOG"

# step "what" command...: runs the command with its output in the log; one line on success, the log's tail on failure.
step() {
  local what=$1
  shift
  printf '%s ... ' "$what"
  if "$@" >>"$LOG" 2>&1; then
    echo "ok"
  else
    echo "FAILED"
    echo "--- last lines of $LOG ---"
    tail -n 25 "$LOG"
    exit 1
  fi
}

# Where PyTorch comes from: installed | cpu-index | configured. NEURODRIVE_INSTALL_PLAN=1 only prints
# that choice (probing the CPU index even when torch is installed) and installs nothing.
torch_source=configured
if [ -z "${NEURODRIVE_INSTALL_PLAN:-}" ] && \
    $PY -c "import sys, torch; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" >/dev/null 2>&1; then
  torch_source=installed
elif $PY -c "import urllib.request; urllib.request.urlopen('$TORCH_CPU_INDEX/torch/', timeout=5)" >/dev/null 2>&1; then
  torch_source=cpu-index
fi
if [ -n "${NEURODRIVE_INSTALL_PLAN:-}" ]; then
  echo "torch: $torch_source"
  exit 0
fi

# open3d's wheel links against libusb-1.0 (Debian package libusb-1.0-0); ffmpeg is used for mp4 video;
# the native ray caster (neurodrive/native) compiles against Embree 3 (libembree-dev) with g++.
need_apt=()
ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0" || need_apt+=(libusb-1.0-0)
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
[ -f /usr/include/embree3/rtcore.h ] || need_apt+=(libembree-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  step "apt: updating package lists" $SUDO apt-get update -qq
  step "apt: installing ${need_apt[*]}" env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
else
  echo "apt: libusb-1.0-0, ffmpeg, libembree-dev, g++ already present"
fi

# PyTorch, CPU build: from PyTorch's CPU wheel index when it answers within a few seconds (a plain
# 'pip install torch' from the public index pulls the multi-GB CUDA build); otherwise the configured
# package index, as is (fast when it serves a CPU wheel, as on the project's machines).
case $torch_source in
  installed) echo "torch $TORCH_VERSION: already installed" ;;
  cpu-index)
    if $PY -m pip install -q "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX" >>"$LOG" 2>&1; then
      echo "torch $TORCH_VERSION: installed from PyTorch's CPU wheel index ($TORCH_CPU_INDEX)"
    else
      step "torch $TORCH_VERSION: from the configured index (the CPU index failed)" $PY -m pip install -q "torch==$TORCH_VERSION"
    fi ;;
  *) step "torch $TORCH_VERSION: from the configured index (CPU index not reachable)" $PY -m pip install -q "torch==$TORCH_VERSION" ;;
esac

step "pip: neurodrive and its dependencies (editable, with [dev] and [rerun])" $PY -m pip install -q -e ".[dev,rerun]"
$PY -c "import open3d, neurodrive; print('neurodrive', neurodrive.__version__, 'with open3d', open3d.__version__)"
# The native caster is optional for pip, not here: fail loudly if it did not build.
$PY -c "from neurodrive.raycast.embree import native_built; assert native_built(), 'native Embree caster not built (see $LOG)'; print('native Embree ray caster: built')"
echo "install log: $LOG"
