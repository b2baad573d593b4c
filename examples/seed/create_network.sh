#!/bin/sh
# The seed's create_network.sh: the user-defined bridge network that cutover
# and every app container join.
exec docker network create --driver=bridge --subnet=172.20.0.0/16 --gateway=172.20.0.1 "${NETWORK:-my-network}"
