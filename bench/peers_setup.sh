#!/usr/bin/env bash
# The peer frameworks bench/peers.py measures geotrain against, each in its own virtual environment beside .venv
# (never in it; .gitignore's bench/.venv-*/ covers them):
#   bench/.venv-peers   TorchGeo's Lightning trainers (torchgeo 0.8.1)
#   bench/.venv-arcgis  arcgis.learn (arcgis 2.4.4 on PyPI's fastai 1.0.61): it installs and builds its models,
#                       but its fit() cannot run on PyPI's fastai (bench/PEERS_NOTES.md), so peers.py skips it
#
#   bash bench/peers_setup.sh [torchgeo] [arcgis]      (both by default; safe to run again)
#
# torch and torchvision are .venv's (pinned 2.14.1 / 0.29.1, about 5 GB with their CUDA libraries, on this
# machine's disk): each peer environment reads .venv's site-packages after its own through a .pth file rather than
# holding a second copy. The pins stand on every pip line that could pull torch, so pip never swaps it (another
# torch would download gigabytes). pip only, never uv.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
pins=(torch==2.14.1 torchvision==0.29.1)
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(torchgeo arcgis)

[ -x .venv/bin/python ] || bash scripts/setup.sh train
main_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# make_venv DIR: a Python 3.11 venv that sees .venv's packages (torch among them) after its own, and geotrain's
# source (.venv's editable install of it is a .pth of its own, which Python does not follow from a .pth'd folder)
make_venv() {
  [ -x "$1/bin/python" ] || "$python" -m venv "$1"
  local site
  site=$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf '%s\n' "$main_site" "$PWD/src" > "$site/geotrain-main-venv.pth"
  "$1/bin/python" -m pip install -qq --upgrade pip
}

for peer in "${wanted[@]}"; do
  case $peer in
    torchgeo)
      make_venv bench/.venv-peers
      # torchgeo 0.9 and 0.10 (0.10.1 the newest) need Python >= 3.12, and torch 2.14.1's wheel on this disk is
      # for 3.11 only: 0.8.1 is the newest TorchGeo for it. It brings lightning 2.6, kornia, timm, smp.
      bench/.venv-peers/bin/python -m pip install -q "${pins[@]}" torchgeo==0.8.1
      ;;
    arcgis)
      make_venv bench/.venv-arcgis
      # arcgis.learn imports fastai v1 (`from fastai.vision import ...`); PyPI's last 1.x is 1.0.61 (Esri's
      # own 1.0.63 build is on its conda channel only). Its other imports: cv2, osgeo.gdal_array, sklearn,
      # mmengine, einops; fastai.text's spacy; skimage.
      bench/.venv-arcgis/bin/python -m pip install -q "${pins[@]}" arcgis==2.4.4 fastai==1.0.61 \
        opencv-python-headless scikit-image scikit-learn spacy mmengine einops wheel
      # GDAL's Python bindings have no Linux wheel on PyPI: built against Debian's libgdal (3.6.2 on bookworm)
      if ! command -v gdal-config > /dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgdal-dev
      fi
      bench/.venv-arcgis/bin/python -m pip install -q --no-build-isolation "gdal[numpy]==$(gdal-config --version)"
      # last: fastai 1.0.61 imports pkg_resources, gone from setuptools 81 on (torch's metadata asks for >= 77,
      # which pip reports as a conflict; torch does not need it to run)
      bench/.venv-arcgis/bin/python -m pip install -q "setuptools<70" 2>&1 | grep -v -e "dependency resolver" \
        -e "requires setuptools" || true
      ;;
    *)
      echo "unknown peer $peer (torchgeo, arcgis)" >&2
      exit 2
      ;;
  esac
done
