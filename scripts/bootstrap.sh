# Sourced by ./run-tests and ./run-walkthrough: set this checkout up, idempotently.
#
#   bootstrap_apt PKG...   install the Debian/Ubuntu packages that are missing
#                          (apt-get; through sudo when not root)
#   bootstrap_venv         a virtualenv in $TSGATE_VENV (default .venv) with the
#                          project installed (editable, with the test extras);
#                          reinstalled only when pyproject.toml or setup.py change
#
# Debian 12 and Ubuntu 24.04 refuse `pip install` into the system Python
# (PEP 668), hence the virtualenv. $PYTHON chooses the interpreter (default
# python3 on PATH: a pyenv Python works as well as Debian's).

set -euo pipefail

TSGATE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TSGATE_VENV="${TSGATE_VENV:-$TSGATE_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

say() { printf '== %s\n' "$*" >&2; }

_as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else say "need root for: $*"; return 1
  fi
}

bootstrap_apt() {
  command -v dpkg-query >/dev/null || { say "not Debian/Ubuntu: install by hand: $*"; return 0; }
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  [ "${#missing[@]}" = 0 ] && return 0
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  _as_root apt-get update -qq
  _as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

bootstrap_venv() {
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
    bootstrap_apt python3
    PYTHON=python3
  fi
  if [ ! -x "$TSGATE_VENV/bin/python" ]; then
    say "virtualenv $TSGATE_VENV ($("$PYTHON" --version 2>&1))"
    if ! "$PYTHON" -m venv "$TSGATE_VENV" 2>/dev/null; then
      rm -rf "$TSGATE_VENV"
      bootstrap_apt python3-venv  # Debian's python3 has no ensurepip without it
      "$PYTHON" -m venv "$TSGATE_VENV"
    fi
  fi
  local stamp="$TSGATE_VENV/.tsgate-installed" want
  want="$(cat "$TSGATE_ROOT/pyproject.toml" "$TSGATE_ROOT/setup.py" | cksum) $TSGATE_ROOT"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "pip install -e '.[test]' into $TSGATE_VENV"
    "$TSGATE_VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
    (cd "$TSGATE_ROOT" && "$TSGATE_VENV/bin/python" -m pip install -q -e '.[test]' \
      --config-settings editable_mode=compat)
    echo "$want" >"$stamp"
  fi
  # Twisted's plugin dropin cache, so `twistd tsgate` is found at once.
  (cd "$TSGATE_ROOT" && "$TSGATE_VENV/bin/python" -c \
    "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))")
  export PATH="$TSGATE_VENV/bin:$PATH"
  export VIRTUAL_ENV="$TSGATE_VENV"
}
