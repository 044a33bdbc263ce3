"""Send an image to a running ``tapetum serve`` over REST and print what it found.

export TAPETUM_API_KEY=$(tapetum keys create --name demo --scopes infer)
python examples/serve_clients/rest_client.py ../shared/assets/images/bus.jpg
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import sys
from pathlib import Path

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path, help="a JPEG, PNG, WebP or BMP file")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    parser.add_argument("--conf", type=float, default=0.35, help="confidence threshold")
    args = parser.parse_args()
    key = os.environ.get("TAPETUM_API_KEY")
    if not key:
        parser.error("set TAPETUM_API_KEY to a key with the 'infer' scope (tapetum keys create)")

    content_type = mimetypes.guess_type(args.image.name)[0] or "application/octet-stream"
    response = httpx.post(
        f"{args.url}/v1/detect",
        params={"conf": args.conf},
        content=args.image.read_bytes(),
        headers={"X-API-Key": key, "Content-Type": content_type},
        timeout=30.0,
    )
    if response.is_error:  # every error is a JSON {detail, code}
        sys.exit(f"error: HTTP {response.status_code}: {response.json()['detail']}")

    body = response.json()
    size = body["image"]
    print(f"{body['model']}: {len(body['detections'])} objects in {size['width']}x{size['height']}")
    for det in body["detections"]:
        box = det["box"]
        corners = ", ".join(f"{box[k]:.0f}" for k in ("x1", "y1", "x2", "y2"))
        print(f"  {det['class_name']:<12} {det['confidence']:.2f}  [{corners}]")


if __name__ == "__main__":
    main()
