#!/usr/bin/env bash
# samstudy's one entry point for a fresh machine: sets up the pinned environment (.venv), then
#   ./run.sh study [snakemake args]   runs the study (default: the built-in one) and prints the report path
#   ./run.sh test  [pytest args]      runs the test suite (add --fast to skip the slow end-to-end tests)
#   ./run.sh lint                     ruff, snakefmt --check, snakemake --lint
#   ./run.sh setup                    only sets up the environment
set -euo pipefail
cd "$(dirname "$0")"

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo "samstudy needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
}

setup() {
  local py
  py=$(pick_python)
  if [ ! -x .venv/bin/python ]; then
    if ! "$py" -m venv .venv 2>/dev/null; then
      # Debian ships venv/ensurepip separately
      rm -rf .venv
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq "python3-venv" "$(basename "$py")-venv" >/dev/null 2>&1 ||
          apt-get install -y -qq python3-venv >/dev/null
      else
        echo "python venv support is missing: sudo apt-get install python3-venv" >&2
        exit 1
      fi
      "$py" -m venv .venv
    fi
  fi
  # Reinstall only when the dependency pins change.
  local want have
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  have=$(cat .venv/.samstudy-installed 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    echo "Installing samstudy and its pinned dependencies into .venv (a few minutes the first time)..." >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[dev]"
    # SAM 2 (pyproject's `sam2` extra): an sdist built against the torch installed above, without its
    # optional CUDA extension (its hole filling then falls back as the package does without it)
    .venv/bin/python -m pip install -q "setuptools>=70.1"
    SAM2_BUILD_CUDA=0 .venv/bin/python -m pip install -q --no-build-isolation "sam2==1.1.0"
    echo "$want" >.venv/.samstudy-installed
  fi
  export PATH="$PWD/.venv/bin:$PATH"
}

results_dir() {
  # results_dir of the config the study ran with (the last --configfile given, else config/config.yaml)
  local cfg=config/config.yaml prev=""
  for arg in "$@"; do
    [ "$prev" = "--configfile" ] && cfg="$arg"
    prev="$arg"
  done
  python - "$cfg" <<'PY'
import sys, yaml
print((yaml.safe_load(open(sys.argv[1])) or {}).get("results_dir", "results"))
PY
}

verb="${1:-study}"
shift || true
setup
case "$verb" in
  setup) ;;
  study)
    # after a killed run: unlock and go on; while another run is active here: refuse (samstudy/lock.py)
    python -m samstudy.lock "$@"
    snakemake --cores "${CORES:-all}" "$@"
    echo "Report: $(cd "$(results_dir "$@")" && pwd)/report/index.html"
    ;;
  test) python -m pytest --durations=25 "$@" ;;
  lint)
    ruff check src tests benchmarks
    ruff format --check src tests benchmarks
    snakefmt --check Snakefile workflow/rules
    snakemake --lint
    ;;
  *)
    echo "usage: ./run.sh [setup|study|test|lint] [args...]" >&2
    exit 2
    ;;
esac
