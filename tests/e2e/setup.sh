#!/usr/bin/env bash
# Installs what the end-to-end suite needs, outside the repository, once; later runs reuse it.
#   1. CPython 3.13 built from Debian's python3.13 source package (trixie), into $E2E_HOME/python
#      (bookworm has no python3.13; pyenv's 3.13.0 is older than Home Assistant's floor of 3.13.2);
#   2. a virtual environment $E2E_HOME/venv with a pinned homeassistant and what the integrations the
#      suite loads need, so Home Assistant runs with --skip-pip and never reaches the network;
#   3. in that venv, imageio-ffmpeg's ffmpeg binary, which Home Assistant's TTS uses to convert to MP3.
# Needs root for apt-get (as on CI and the dev machines), and only for the Python build.
# Idempotent: each step is skipped when done, so a second run takes a second and reaches no network.
# E2E_HOME moves the installation; E2E_HA_VERSION picks another Home Assistant release.
set -euo pipefail

E2E_HOME=${E2E_HOME:-/opt/wyoming-openai-e2e}
HA_VERSION=${E2E_HA_VERSION:-2026.2.3}
PY_SERIES=3.13
PY_MIN=3.13.2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY="$E2E_HOME/python/bin/python$PY_SERIES"
VENV="$E2E_HOME/venv"
JOBS=${E2E_JOBS:-$(nproc 2>/dev/null || echo 2)}

log() { printf '[e2e setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

apt_updated=
apt_update() {
    if [ -z "$apt_updated" ]; then
        apt-get update -qq >&2
        apt_updated=1
    fi
}

# Installs what is missing; leaves what is installed alone (no upgrades).
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return
    log "apt-get install ${missing[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-upgrade "${missing[@]}" \
        >"$E2E_HOME/apt.log" 2>&1 || { cat "$E2E_HOME/apt.log" >&2; return 1; }
}

build_python() {
    if [ -x "$PY" ] && "$PY" -c "import sys, ssl, sqlite3, ctypes, zlib, lzma, bz2; sys.exit(sys.version_info < tuple(map(int, '$PY_MIN'.split('.'))))" 2>/dev/null; then
        log "python: $("$PY" -V) at $PY"
        return
    fi
    log "python: building CPython $PY_SERIES from Debian's python$PY_SERIES source package"
    local src_list=/etc/apt/sources.list.d/wyoming-openai-e2e-trixie-src.sources
    if ! apt-cache showsrc "python$PY_SERIES" 2>/dev/null | grep -q '^Package:'; then
        cat > "$src_list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        apt_updated=
    fi
    apt_update
    # Only what the modules Home Assistant imports need (ssl, sqlite3, ctypes, compression, uuid).
    apt_install build-essential xz-utils pkg-config libssl-dev libffi-dev zlib1g-dev libsqlite3-dev \
        libbz2-dev liblzma-dev uuid-dev libexpat1-dev libreadline-dev libncurses-dev
    local work
    work=$(mktemp -d /tmp/e2e-python-build.XXXXXX)
    (
        cd "$work"
        # The upstream tarball of Debian's source package (Debian's own patches are about Debian's
        # layout and packaging, which a private prefix does not want).
        apt-get source --download-only -qq "python$PY_SERIES" 2>&1 | grep -v 'unsandboxed as root' >&2 || true
        ls python${PY_SERIES}_*.orig.tar.xz >/dev/null
        tar xf python${PY_SERIES}_*.orig.tar.xz
        cd Python-*/
        # Lean: no PGO/LTO, no debug info, no test suite run, no test modules installed.
        local t=$SECONDS
        ./configure --prefix="$E2E_HOME/python" --with-ensurepip=install --disable-test-modules \
            OPT="-DNDEBUG -fwrapv -O2" >build.log 2>&1 || { tail -50 build.log >&2; exit 1; }
        log "python: configured in $((SECONDS - t)) s; compiling with make -j$JOBS"
        t=$SECONDS
        make -j"$JOBS" >>build.log 2>&1 || { tail -50 build.log >&2; exit 1; }
        log "python: compiled in $((SECONDS - t)) s"
        t=$SECONDS
        make install >>build.log 2>&1 || { tail -50 build.log >&2; exit 1; }
        log "python: installed in $((SECONDS - t)) s"
    )
    rm -rf "$work"
    "$PY" -c 'import ssl, sqlite3, ctypes, zlib, lzma, bz2, uuid' >&2
    log "python: built $("$PY" -V)"
}

# pip, quiet, without the machine-wide config's notes about absent local indexes.
pip_install() {
    local status=0
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >"$E2E_HOME/pip.log" 2>&1 || status=$?
    grep -v "^WARNING: Location '" "$E2E_HOME/pip.log" >&2 || true
    return $status
}

install_home_assistant() {
    # The marker names what was installed: a new pin or a new integration list reinstalls.
    local stamp
    stamp="$HA_VERSION $(cat "$HERE/ha_config.py" "$HERE/ha_requirements.py" | sha256sum | cut -c1-16)"
    if [ -f "$VENV/.e2e-installed" ] && [ "$(cat "$VENV/.e2e-installed")" = "$stamp" ] \
        && "$VENV/bin/python" -c 'import homeassistant' 2>/dev/null; then
        log "home assistant: $HA_VERSION already in $VENV"
        return
    fi
    log "home assistant: installing $HA_VERSION into $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    pip_install --upgrade pip
    pip_install "homeassistant==$HA_VERSION"
    local constraints requirements
    constraints=$("$VENV/bin/python" -c 'import homeassistant, os; print(os.path.join(os.path.dirname(homeassistant.__file__), "package_constraints.txt"))')
    requirements=$("$VENV/bin/python" "$HERE/ha_requirements.py")
    # imageio-ffmpeg ships an ffmpeg binary: Home Assistant's TTS converts with it (MP3).
    # shellcheck disable=SC2086
    pip_install -c "$constraints" $requirements imageio-ffmpeg
    "$VENV/bin/python" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())' > "$VENV/.e2e-ffmpeg"
    echo "$stamp" > "$VENV/.e2e-installed"
    log "home assistant: installed $("$VENV/bin/python" -c 'from homeassistant.const import __version__; print(__version__)')"
}

mkdir -p "$E2E_HOME"
started=$SECONDS
build_python
install_home_assistant
log "ready in $((SECONDS - started)) s: E2E_HOME=$E2E_HOME"
