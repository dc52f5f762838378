#!/bin/sh
# Install the operators' tools the ecosystem tests run against, on Debian/Ubuntu as root:
# promtool (package prometheus), node_exporter (prometheus-node-exporter), the
# distribution's supervisord (supervisor) and the system Python's PyYAML, psutil,
# requests, venv and pip (what the plugin needs under that supervisord). `make test`
# runs this first; .ci/run gets it that way. Not root, no apt-get, or
# SIDECAR_TEST_TOOLS=0: it installs nothing, says what is missing, and the tests
# that need a missing tool skip with the command that installs it.
#
# Installing these packages must not start their daemons (a system supervisord
# on /run/supervisor.sock, prometheus on :9090, node_exporter on :9100): the tests
# never use them, and CI must not leave them running. So the install runs under
# a policy-rc.d that denies every service start (exit 101), created for the
# install and removed after it, unless the host already has its own.
set -eu
PKGS="prometheus prometheus-node-exporter supervisor python3-yaml python3-psutil python3-requests python3-venv python3-pip"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

hint="apt-get install -y --no-install-recommends$missing"
if [ "${SIDECAR_TEST_TOOLS:-1}" = 0 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_tools: not installing$missing (the ecosystem tests that need them will skip); to install: sudo $hint" >&2
    exit 0
fi

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    trap 'exit 130' INT TERM
    printf '#!/bin/sh\n# sidecar_plugin tests/support/install_tools.sh: no service starts while it installs\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
fi
echo "install_tools: installing$missing (no service start: $policy)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -q
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing
