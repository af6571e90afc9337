#!/usr/bin/env bash
# Install (or uninstall) wastesort as a systemd service. Idempotent: run it again to upgrade.
#
#   sudo systemd/install.sh [--start]              install into / and enable (and start) the service
#   systemd/install.sh --root /tmp/img --no-venv   stage into a tree (no system changes, no virtualenv)
#   sudo systemd/install.sh --uninstall [--purge]  remove it (--purge: config, state and user too)
#
# Creates: the 'wastesort' user (groups dialout, video) via sysusers.d, a virtualenv under
# /opt/wastesort/venv, /etc/wastesort/wastesort.toml (from daemon/defaults/example.toml, never
# overwritten) plus wastesort.toml.example, an empty /etc/wastesort/mqtt-password credential, and
# /etc/systemd/system/wastesort.service. See docs/systemd.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCE="$(dirname "$HERE")"
ROOT="/"
PREFIX="/opt/wastesort"
PYTHON="${PYTHON:-python3.11}"
PIP_ARGS=""
MAKE_VENV=1
ENABLE=1
START=0
UNINSTALL=0
PURGE=0
UNIT="wastesort.service"
CREDENTIAL_PATH="/run/credentials/$UNIT/mqtt-password"

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<USAGE

options:
  --root DIR        install into DIR instead of / (DESTDIR-style; no systemctl start, no daemon-reload)
  --prefix DIR      install location of the virtualenv and docs (default $PREFIX)
  --python PY       interpreter for the virtualenv (default $PYTHON)
  --source DIR      wastesort source tree or wheel to pip-install (default $SOURCE)
  --pip-args ARGS   extra pip arguments, e.g. "--no-index --find-links /media/usb/wheels"
  --no-venv         do not create/upgrade the virtualenv
  --no-enable       install the unit but do not enable it
  --start           (re)start the service after installing (not with --root)
  --uninstall       remove the unit, the virtualenv and the docs; keep config, state and user
  --purge           with --uninstall: also remove /etc/wastesort, /var/lib/wastesort and the user
USAGE
}

die() { echo "install.sh: error: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --root=*) ROOT="${1#*=}"; shift ;;
        --prefix) PREFIX="${2:?}"; shift 2 ;;
        --python) PYTHON="${2:?}"; shift 2 ;;
        --source) SOURCE="${2:?}"; shift 2 ;;
        --pip-args) PIP_ARGS="${2-}"; shift 2 ;;
        --no-venv) MAKE_VENV=0; shift ;;
        --no-enable) ENABLE=0; shift ;;
        --start) START=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[[ "$PREFIX" == /* ]] || die "--prefix must be absolute"
ROOT="$(mkdir -p "$ROOT" && cd "$ROOT" && pwd)"
R="${ROOT%/}"                   # "" for the real system, so "$R/etc" is "/etc"
LIVE=0                          # 1: act on the running system (systemctl, useradd)
[[ -z "$R" ]] && LIVE=1
if [[ $LIVE == 1 && $(id -u) != 0 ]]; then
    die "installing into / needs root (sudo), or use --root DIR for a staging tree"
fi
[[ $START == 1 && $LIVE == 0 ]] && die "--start cannot be used with --root"
[[ $PURGE == 1 && $UNINSTALL == 0 ]] && die "--purge only goes with --uninstall"
if [[ $LIVE == 0 && $MAKE_VENV == 1 && $UNINSTALL == 0 ]]; then
    die "a virtualenv cannot be moved after creation: with --root pass --no-venv and create it inside the target system"
fi

UNIT_DIR="$R/etc/systemd/system"
CONF_DIR="$R/etc/wastesort"
STATE_DIR="$R/var/lib/wastesort"
SYSUSERS="$R/etc/sysusers.d/wastesort.conf"
systemd_running() { [[ $LIVE == 1 && -d /run/systemd/system ]]; }

enable_unit() {
    if command -v systemctl >/dev/null; then
        systemctl --root="$ROOT" --quiet enable "$UNIT"
    else  # the same symlink systemctl would create from [Install] WantedBy=multi-user.target
        mkdir -p "$UNIT_DIR/multi-user.target.wants"
        ln -sfn "../$UNIT" "$UNIT_DIR/multi-user.target.wants/$UNIT"
    fi
}

disable_unit() {
    if command -v systemctl >/dev/null; then
        systemctl --root="$ROOT" --quiet disable "$UNIT" 2>/dev/null || true
    fi
    rm -f "$UNIT_DIR/multi-user.target.wants/$UNIT"
}

group_id() { awk -F: -v n=wastesort '$1 == n { print $3 }' "$R/etc/group" 2>/dev/null; }

create_user() {
    mkdir -p "$(dirname "$SYSUSERS")"
    install -m 0644 "$HERE/wastesort.sysusers" "$SYSUSERS"
    if command -v systemd-sysusers >/dev/null; then
        systemd-sysusers --root="$ROOT" "$SYSUSERS"
    elif [[ $LIVE == 1 ]]; then
        id wastesort >/dev/null 2>&1 || useradd --system --home-dir /var/lib/wastesort --shell /usr/sbin/nologin wastesort
        usermod -a -G dialout,video wastesort
    else
        die "systemd-sysusers is needed to create the user under --root"
    fi
    say "user wastesort (groups: $(awk -F: '$4 ~ /(^|,)wastesort(,|$)/ { printf "%s ", $1 }' "$R/etc/group"))"
}

install_config() {
    mkdir -p "$CONF_DIR"
    local gid
    gid="$(group_id)"
    # Root owns the config; the service reads it through its group. Calibration (run as root) writes it.
    chmod 0750 "$CONF_DIR"
    if [[ -n "$gid" ]]; then chown "0:$gid" "$CONF_DIR" 2>/dev/null || say "warning: cannot chown $CONF_DIR (not root?)"; fi
    local example="$SOURCE/daemon/defaults/example.toml"
    [[ -f "$example" ]] || die "example config not found: $example (--source must be the wastesort source tree)"
    # The service gets the broker password from LoadCredential; point the example's comment there.
    sed "s|^# *password_file = .*|# password_file = \"$CREDENTIAL_PATH\"   # via LoadCredential, see docs/systemd.md|" \
        "$example" >"$CONF_DIR/wastesort.toml.example.new"
    chmod 0640 "$CONF_DIR/wastesort.toml.example.new"
    mv -f "$CONF_DIR/wastesort.toml.example.new" "$CONF_DIR/wastesort.toml.example"
    if [[ -e "$CONF_DIR/wastesort.toml" ]]; then
        say "kept existing $CONF_DIR/wastesort.toml (the new example is wastesort.toml.example)"
    else
        install -m 0640 "$CONF_DIR/wastesort.toml.example" "$CONF_DIR/wastesort.toml"
        say "created $CONF_DIR/wastesort.toml from the example: edit it, then run 'wastesort calibrate ...'"
    fi
    if [[ ! -e "$CONF_DIR/mqtt-password" ]]; then
        (umask 077 && : >"$CONF_DIR/mqtt-password")
        say "created empty $CONF_DIR/mqtt-password (root only; put the broker password there if it needs one)"
    fi
    if [[ -n "$gid" ]]; then
        chown "0:$gid" "$CONF_DIR/wastesort.toml" "$CONF_DIR/wastesort.toml.example" 2>/dev/null || true
    fi
    chmod 0600 "$CONF_DIR/mqtt-password"
    mkdir -p "$STATE_DIR"
}

install_venv() {
    local venv="$R$PREFIX/venv"
    if [[ $MAKE_VENV == 0 ]]; then
        say "skipping the virtualenv (--no-venv): $venv"
        return
    fi
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (Python 3.11 is required; or --python PY)"
    [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
    # shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
    "$venv/bin/python" -m pip install --quiet --upgrade $PIP_ARGS "$SOURCE"
    say "installed wastesort into $venv"
    if [[ -e "$CONF_DIR/wastesort.toml" ]]; then
        "$venv/bin/wastesort" check-config "$CONF_DIR/wastesort.toml" || say "warning: fix the config before starting"
    fi
}

install_unit() {
    mkdir -p "$UNIT_DIR" "$R$PREFIX/docs"
    sed "s|/opt/wastesort|$PREFIX|g" "$HERE/$UNIT" >"$UNIT_DIR/$UNIT.new"
    chmod 0644 "$UNIT_DIR/$UNIT.new"
    mv -f "$UNIT_DIR/$UNIT.new" "$UNIT_DIR/$UNIT"
    for doc in systemd.md calibration.md; do
        if [[ -f "$SOURCE/docs/$doc" ]]; then install -m 0644 "$SOURCE/docs/$doc" "$R$PREFIX/docs/$doc"; fi
    done
    say "installed $UNIT_DIR/$UNIT"
    if [[ $ENABLE == 1 ]]; then enable_unit && say "enabled $UNIT"; fi
    if systemd_running; then
        systemctl daemon-reload
        if [[ $START == 1 ]]; then systemctl restart "$UNIT" && say "started $UNIT"; fi
    elif [[ $START == 1 ]]; then
        say "warning: systemd is not running here; not starting $UNIT"
    fi
}

uninstall() {
    if systemd_running; then systemctl stop "$UNIT" 2>/dev/null || true; fi
    disable_unit
    rm -f "$UNIT_DIR/$UNIT"
    rm -rf "${R:?}$PREFIX"
    say "removed $UNIT and $PREFIX"
    if [[ $PURGE == 1 ]]; then
        rm -rf "$CONF_DIR" "$STATE_DIR" "$SYSUSERS"
        if [[ $LIVE == 1 ]]; then
            userdel wastesort 2>/dev/null || true
        else
            for f in passwd group shadow gshadow; do
                [[ -f "$R/etc/$f" ]] && sed -i -e '/^wastesort:/d' -e 's/,wastesort\(,\|$\)/\1/; s/:wastesort,/:/; s/:wastesort$/:/' "$R/etc/$f"
            done
        fi
        say "purged config, state and user"
    else
        say "kept $CONF_DIR, $STATE_DIR and the wastesort user (--purge removes them)"
    fi
    if systemd_running; then systemctl daemon-reload; fi
}

if [[ $UNINSTALL == 1 ]]; then
    uninstall
else
    create_user
    install_config
    install_venv
    install_unit
fi
