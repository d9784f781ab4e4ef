#!/usr/bin/env bash
# git, for the /release tests (a bare repository on disk is the remote; nothing is started).
# `git_start` installs it with apt-get when it is missing; `git_stop` has nothing to stop.

git_start() {
  if command -v git >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "git is not installed: installing it" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git >/dev/null
  else
    echo "git not found and cannot install it (apt-get install git)" >&2
    return 1
  fi
}

git_stop() {
  :
}
