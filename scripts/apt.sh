# Sourced by scripts/demo.sh and scripts/test.sh: `apt_install PACKAGE...` installs Debian packages
# that are missing, as root or through passwordless sudo, running `apt-get update` once. The caller
# defines `die MESSAGE`.
SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=(sudo -n); fi
fi
APT_UPDATED=0
apt_install() {
    [ "$(id -u)" = 0 ] || [ ${#SUDO[@]} -gt 0 ] || die "$* missing and no root or sudo to install it: apt-get install -y $*"
    command -v apt-get >/dev/null || die "$* missing and no apt-get: install $* yourself"
    if [ "$APT_UPDATED" = 0 ]; then
        "${SUDO[@]}" apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}
