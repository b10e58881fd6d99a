#!/bin/sh
# The two-nodes scenario `cargo xtask e2e --topology two-nodes` runs: this script runs twice at
# once, as ROLE=server in one sandbox (eth0 10.200.0.2) and as ROLE=agent in another
# (10.200.0.3), the two on one bridge (xtask/src/sandbox.rs). The agent joins with the command
# the server's install printed; the two coordinate through files in SHARED:
#   join              the server URL the server's join command names
#   node-token        a copy of the server's join token, as a user would carry it over
#   agent-installed   the agent's install exit code
#   agent-may-stop    the server is done with the agent
#   agent-uninstalled the agent uninstalled itself
#   abort             the server could not get as far as printing a join command
# Input (environment): TARBALL, RUN (this node's fresh directory), SHARED, ROLE (server |
# agent), MODE (full | control-plane-only: the server's mode), E2E_LIB (lib.sh), E2E_DRIVER
# (crates/e2e-driver, lib.sh's `driver`).
# Output: as scenario.sh (STEP/TIME/RSS/K3SERR lines); xtask prefixes each with the role.
set -u
# shellcheck source=tests/e2e/lib.sh
. "$E2E_LIB"

SERVER_NODE=k3sg-server; AGENT_NODE=k3sg-agent
# The checks are the e2e driver's (crates/e2e-driver/src/two_nodes.rs lists each phase's steps;
# teardown.rs the end's); this script does the start-up: extract, each node's ./install as a
# user runs it, the files the nodes hand each other, and the order of the phases.
two_nodes() { driver two-nodes --shared "$SHARED" --mode "$MODE" "$@"; }

# put NAME TEXT: writes SHARED/NAME whole (aside, then renamed), so the other node never reads
# half of it.
put() { printf '%s\n' "$2" > "$SHARED/.$1.tmp" && mv "$SHARED/.$1.tmp" "$SHARED/$1"; }

# After the scenario, on either node: stop, nothing runs, uninstall, the host as before.
finish() {
  driver k3s-log
  driver teardown stop
  driver teardown uninstall
  driver teardown restored routes mounts addresses nothing-left
}

server() {
  ARGS="--node-name $SERVER_NODE"; [ "$MODE" = control-plane-only ] && ARGS="$ARGS --control-plane-only"
  echo "== install $ARGS"
  if install_stamped --prefix "$P" --data-dir "$D" $ARGS; then step install ok; else step install FAIL "rc=$(cat $RUN/install.rc)"; fi
  # The join command install printed (the driver checks it and leaves its URL in
  # RUN/join-command), handed to the agent with a copy of the token, as a user carries it over.
  two_nodes join-command
  JOIN=$(cat "$RUN/join-command" 2>/dev/null)
  if [ -z "$JOIN" ]; then
    put abort "the server printed no join command"
    finish; return
  fi
  cp "$D/k3s/server/node-token" "$SHARED/node-token"
  put join "$JOIN"
  two_nodes server-steps
  put agent-may-stop yes
  two_nodes agent-uninstalled
  finish
  driver teardown restored host-files
}

agent() {
  two_nodes join
  if [ ! -e "$SHARED/join" ]; then
    put agent-uninstalled "never installed"
    return
  fi
  # The k3s way (install.sh's K3S_URL and K3S_TOKEN_FILE); the server printed this form too.
  K3S_URL=$(cat "$SHARED/join"); K3S_TOKEN_FILE="$SHARED/node-token"; export K3S_URL K3S_TOKEN_FILE
  echo "== K3S_URL=$K3S_URL K3S_TOKEN_FILE=$K3S_TOKEN_FILE install --node-name $AGENT_NODE"
  INSTALL_START=$(now)
  if install_stamped --prefix "$P" --data-dir "$D" --node-name $AGENT_NODE; then step install ok; else step install FAIL "rc=$(cat $RUN/install.rc)"; fi
  unset K3S_URL K3S_TOKEN_FILE
  put agent-installed "$(cat $RUN/install.rc)"
  two_nodes agent-steps --install-start "$INSTALL_START"

  # Idle: what the agent's sandbox keeps paying for.
  sleep 10
  rss
  two_nodes server-done
  finish
  put agent-uninstalled finished
}

driver teardown before
if ! extract; then
  [ "$ROLE" = server ] && put abort "the server could not extract the bundle"
  [ "$ROLE" = agent ] && put agent-uninstalled "never installed"
  exit 0
fi
case "$ROLE" in
  server) server ;;
  agent) agent ;;
  *) step role FAIL "ROLE=$ROLE: must be server or agent" ;;
esac
