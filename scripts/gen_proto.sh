#!/usr/bin/env bash
# Regenerate fedsim/peer/peer_pb2.py from peer.proto. The generated code must
# match the protobuf runtime that Flower pins (6.x): grpcio-tools 1.81 does.
set -euo pipefail
cd "$(dirname "$0")/../fedsim/peer"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install -q "grpcio-tools==1.81.1" "protobuf==6.33.6"
"$TMP/venv/bin/python" -m grpc_tools.protoc -I. --python_out=. peer.proto
