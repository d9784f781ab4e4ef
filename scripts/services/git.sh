#!/usr/bin/env bash
# git, for the history commit and /release tests (a bare repository on disk is the remote).
# `git_start` installs it with apt-get when missing and exports DEPLOYBOT_TEST_GIT.

git_start() {
  if ! command -v git >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "git is not installed: installing it" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git >/dev/null || return 1
    else
      echo "git not found and cannot install it (needs root and apt-get)" >&2
      return 1
    fi
  fi
  DEPLOYBOT_TEST_GIT=$(command -v git)
  export DEPLOYBOT_TEST_GIT
}

git_stop() {
  :
}
