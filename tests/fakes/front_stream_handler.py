"""A Lambda handler for the local stack's streaming tests: the front sends it API Gateway proxy events, and the
request's path picks the answer.

``/stream``, ``/crash-first``, ``/crash-mid-stream``, ``/slow`` are tests/fakes/stream_handler.py's modes of that
name; ``/dict`` is a fixed proxy dict (the same under awslambdaric and the streaming runtime), ``/pid`` the
runtime's process id, ``/sleep`` a proxy dict after 3 s, ``/presign`` one presigned S3 URL (an AWS call the
recorder sees). Imported as ``tests.fakes.front_stream_handler`` with the repository root on PYTHONPATH.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from tests.fakes import stream_handler

SLEEP_SECONDS = 3.0
DICT_ANSWER = {
    "statusCode": 201,
    "headers": {"Content-Type": "application/json", "X-Mode": "dict"},
    "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
    "body": base64.b64encode(json.dumps({"answer": "fixed", "bytes": "\u00e9\u2603"}).encode()).decode(),
    "isBase64Encoded": True,
}


def handler(event: dict[str, Any], context: Any) -> object:
    mode = str(event.get("path", "")).strip("/")
    if mode == "dict":
        return DICT_ANSWER
    if mode == "pid":
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps({"pid": os.getpid()})}
    if mode == "sleep":
        time.sleep(SLEEP_SECONDS)
        return DICT_ANSWER
    if mode == "presign":
        import boto3

        # Dummy credentials: signing a URL needs some, and nothing is sent anywhere.
        s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="AKIDLOCALTEST", aws_secret_access_key="not-a-secret")
        url = s3.generate_presigned_url("get_object", Params={"Bucket": os.environ["IMAGES_BUCKET"], "Key": "images/x.png"})
        return {"statusCode": 200, "body": json.dumps({"url": url})}
    return stream_handler.handler({"mode": mode}, context)
