#!/bin/sh
# Run by the package manager before the package is removed (the .deb's prerm and the .rpm's
# %preun). A removal stops nothing: an app still running keeps serving Codex until its user
# quits it, and accounts, tokens and settings (in each user's ~/.codex/multi-auth, keychain and
# config folder) stay where they are, for a reinstall or for `cma` built from source.
set -e
case "${1:-}" in
  remove | 0)
    echo "Codex App Account Router: removed the program; every user's accounts and settings" \
      "are kept. A running app keeps running until it is quit; a start-at-login entry left" \
      "behind does nothing (turn Start at login off first to remove it)."
    ;;
esac
exit 0
