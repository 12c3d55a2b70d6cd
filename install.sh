#!/usr/bin/env bash
# One-command install of neurodrive and everything it needs (Debian/Ubuntu, CPU only).
#   bash install.sh          # system / active Python environment
set -euo pipefail
cd "$(dirname "$0")"

# open3d's wheel links against libusb-1.0 (Debian package libusb-1.0-0); ffmpeg is used for mp4 video;
# the native ray caster (neurodrive/native) compiles against Embree 3 (libembree-dev) with g++.
need_apt=()
ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0" || need_apt+=(libusb-1.0-0)
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
[ -f /usr/include/embree3/rtcore.h ] || need_apt+=(libembree-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
# The CPU build of PyTorch (plain 'torch' would pull a multi-GB CUDA build).
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[dev]"
$PY -c "import open3d, neurodrive; print('neurodrive', neurodrive.__version__, 'with open3d', open3d.__version__)"
# The native caster is optional for pip, not here: fail loudly if it did not build.
$PY -c "from neurodrive.native.caster import native_built; assert native_built(), 'native Embree caster not built (see the pip output above)'; print('native Embree ray caster: built')"
