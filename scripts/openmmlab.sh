#!/usr/bin/env bash
# Installs geotrain's 'openmmlab' extra into .venv so that MMSEGMENTATION and MMDETECTION train: mmcv 2.1.0 built
# from its source with its compiled operators, then mmengine, mmsegmentation and mmdet from PyPI. PyPI has mmcv only as source,
# and its setup compiles as C++17 where the headers of the pinned torch 2.14.1 require C++20: the flag is changed
# before building. Needs a C++ compiler; about 7 minutes on 2 cores (FORCE_CUDA=1 with a CUDA toolkit builds the
# GPU operators too, much longer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh train
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# mmcv's setup imports pkg_resources, which setuptools 81 and later no longer have
.venv/bin/python -m pip install -q "setuptools<81" wheel ninja
.venv/bin/python -m pip download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==2.1.0" -d "$work"
tar xzf "$work"/mmcv-2.1.0.tar.gz -C "$work"
sed -i 's/-std=c++1[47]/-std=c++20/g' "$work"/mmcv-2.1.0/setup.py
MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-2}" \
  .venv/bin/python -m pip install -q --no-build-isolation --no-deps "$work"/mmcv-2.1.0
.venv/bin/python -m pip install -q -e ".[openmmlab]"
cd "$work"  # not from the source tree: mmcv must be imported from the venv
"$OLDPWD"/.venv/bin/python -c "from geotrain.task import catalog
for package, keyword in (('mmseg', 'MMSEGMENTATION'), ('mmdet', 'MMDETECTION')):
    print(catalog.openmmlab_missing(package) or keyword + ' trains here')"
