"""Send an image to a running ``tapetum serve`` over gRPC and print what it found.

Uses the stubs generated from ``proto/tapetum/v1/tapetum.proto`` that ship in the package
(``tapetum.serve.grpc._gen``); other languages generate theirs from the same file.

    export TAPETUM_API_KEY=$(tapetum keys create --name demo --scopes infer)
    python examples/serve_clients/grpc_client.py ../shared/assets/images/bus.jpg
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import sys
from pathlib import Path

import grpc

from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path, help="a JPEG, PNG, WebP or BMP file")
    parser.add_argument("--target", default="127.0.0.1:50051", help="the server's host:port")
    parser.add_argument("--conf", type=float, default=0.35, help="confidence threshold")
    args = parser.parse_args()
    key = os.environ.get("TAPETUM_API_KEY")
    if not key:
        parser.error("set TAPETUM_API_KEY to a key with the 'infer' scope (tapetum keys create)")

    request = pb.DetectRequest(
        image=args.image.read_bytes(),
        content_type=mimetypes.guess_type(args.image.name)[0] or "application/octet-stream",
        conf=args.conf,
    )
    # A plain channel suits loopback; across a network use grpc.secure_channel.
    with grpc.insecure_channel(args.target) as channel:
        stub = pb_grpc.DetectorStub(channel)  # type: ignore[no-untyped-call]
        try:
            response = stub.Detect(request, metadata=[("x-api-key", key)], timeout=30.0)
        except grpc.RpcError as exc:  # the status code and the server's reason
            sys.exit(f"error: {exc.code().name}: {exc.details()}")

    size = response.image
    print(f"{response.model}: {len(response.detections)} objects in {size.width}x{size.height}")
    for det in response.detections:
        corners = ", ".join(f"{v:.0f}" for v in (det.box.x1, det.box.y1, det.box.x2, det.box.y2))
        print(f"  {det.class_name:<12} {det.confidence:.2f}  [{corners}]")


if __name__ == "__main__":
    main()
