#!/bin/sh
# Run by the package manager after an install or upgrade (the .deb's postinst and the .rpm's
# %post). After an upgrade, a tray app still running from the replaced version is asked to
# quit (SIGTERM: it stops its router within 3 s and exits), so that nobody keeps running a
# program whose files are gone and whose dashboard would now be the new version's; the user is
# told to start it again. A first install, or the same version installed again, touches no
# running program. Nothing in anyone's home folder is touched.
set -e

upgraded=no
case "${1:-}" in
  configure)
    # deb: $2 is the version replaced (empty on a first install).
    if [ -n "${2:-}" ]; then
      now=$(dpkg-query -W -f='${Version}' codex-app-account-router 2>/dev/null || true)
      [ "$2" = "$now" ] || upgraded=yes
    fi
    ;;
  [2-9])
    # rpm: how many versions are installed after this step; 2 during an upgrade.
    upgraded=yes
    ;;
esac
[ "$upgraded" = yes ] || exit 0

# The tray app, found by its program file (which an upgrade has just replaced, so the kernel
# may show it as deleted); the path is matched at its end so that a system in a chroot counts.
running() {
  for proc in /proc/[0-9]*; do
    exe=$(readlink "$proc/exe" 2>/dev/null) || continue
    case "$exe" in
      */usr/bin/codex-app-account-router | */usr/bin/codex-app-account-router" (deleted)") ;;
      *) continue ;;
    esac
    # A process that has exited but was not yet collected by its parent is gone for us.
    state=$(sed -n 's/^.*) \(.\).*$/\1/p' "$proc/stat" 2>/dev/null || true)
    [ "$state" = Z ] || echo "${proc#/proc/}"
  done
}

pids=$(running)
[ -n "$pids" ] || exit 0
for pid in $pids; do
  owner=$(stat -c %U "/proc/$pid" 2>/dev/null || echo unknown)
  if kill -TERM "$pid" 2>/dev/null; then
    echo "Codex App Account Router: asked the running app (process $pid of $owner) to quit so" \
      "that the new version is used; start it again from the app menu."
  fi
done
tries=0
while [ "$tries" -lt 50 ]; do
  [ -n "$(running)" ] || exit 0
  sleep 0.2
  tries=$((tries + 1))
done
echo "Codex App Account Router: process $(running | tr '\n' ' ')did not quit within 10 s;" \
  "quit it from its tray menu and start it again." >&2
exit 0
