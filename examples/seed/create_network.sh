#!/bin/sh
# The seed's create_network.sh: the user-defined bridge network that cutover
# and every app container join.
#
#   ./create_network.sh                       # my-network, the seed's 172.20.0.0/16
#   NETWORK=test-network ./create_network.sh  # a second copy: a free subnet Docker picks
#   SUBNET=172.30.0.0/16 ./create_network.sh  # a subnet of your choice
#
# SUBNET defaults to the seed's 172.20.0.0/16 for the seed's network name
# only; any other NETWORK gets a subnet Docker picks (one that overlaps no
# other network), so two copies of this setup can run side by side. SUBNET=
# (set and empty) always lets Docker pick.
set -eu
network=${NETWORK:-my-network}
if [ -z "${SUBNET+set}" ]; then
	if [ "$network" = my-network ]; then SUBNET=172.20.0.0/16; else SUBNET=; fi
fi
if [ -z "$SUBNET" ]; then
	exec docker network create --driver=bridge "$network"
fi
if ! out=$(docker network create --driver=bridge --subnet="$SUBNET" "$network" 2>&1); then
	echo "$out" >&2
	case $out in
	*overlap*) echo "create_network.sh: $SUBNET overlaps a network this host already has (see docker network ls); pick another with SUBNET=172.30.0.0/16, or let Docker choose with SUBNET= ./create_network.sh" >&2 ;;
	esac
	exit 1
fi
echo "$out"
