#!/usr/bin/env bash
# Installs what cluster-dispatcher needs on a Debian 12 machine, once, as root:
#  - the pg-ha engine's programs (etcd, PostgreSQL 15, Patroni, HAProxy) — none of them is started here;
#  - the firewall tools (nftables, iptables, ipset) and what the test tiers use (iproute2 for network
#    namespaces, nmap for scans, tcpdump for the packet captures of the TLS test, OpenSSH server for
#    the deploy tests, tmux for the shell test, systemd for `systemd-analyze verify`, strace for the
#    launch stress test's syscall watch, ufw and firewalld to apply their exports inside test namespaces
#    — see below: never active on the machine —, chromium for the web console's browser test);
#  - the unprivileged user database processes run as (PostgreSQL refuses to run as root).
# Idempotent: running it again changes nothing.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (or with sudo): bash deploy/install-deps.sh" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  etcd-server etcd-client postgresql-15 postgresql-client-15 patroni python3-psycopg2 haproxy pgbouncer \
  nftables iptables ipset iproute2 nmap openssh-server openssh-client tmux procps systemd curl ca-certificates openssl tcpdump strace ufw chromium >/dev/null
# ufw and firewalld are here only for the network-tier tests, which run them inside namespaces with
# private copies of their config. Neither may become this machine's firewall: ufw installs with
# ENABLED=no; firewalld's package would start its service, so it is installed with service starts denied
# (policy-rc.d, Debian's mechanism for that) and its service disabled.
if ! dpkg -s firewalld >/dev/null 2>&1; then
  prc=/usr/sbin/policy-rc.d
  ours=no
  if [ ! -e "$prc" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$prc" && chmod 0755 "$prc" && ours=yes
    trap 'rm -f "$prc"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends firewalld >/dev/null
  if [ "$ours" = yes ]; then rm -f "$prc"; trap - EXIT; fi
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now firewalld >/dev/null 2>&1 || true
fi
# Debian's packages may start their services on hosts with a real init; our processes need the ports.
for svc in etcd postgresql patroni haproxy pgbouncer; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    echo "install-deps.sh: note: the distribution's $svc service is running; cluster-dispatcher uses its own ports, but you may want: systemctl disable --now $svc" >&2
  fi
done
if ! id -u cluster-dispatcher >/dev/null 2>&1; then
  useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin cluster-dispatcher
fi
# The test suite runs PostgreSQL as its own unprivileged user too (test/process/engine-programs.test.ts).
if [ "${CI:-}" = "true" ] || [ "${INSTALL_TEST_USERS:-}" = "1" ]; then
  id -u cdtest >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin cdtest
fi
echo "install-deps.sh: done (pg-ha programs, firewall tools, user cluster-dispatcher)"
