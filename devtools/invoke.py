"""``sam local invoke -e`` without Docker: one event through the real RIE, with a real S3 server behind it.

    python -m devtools.invoke api events/api_generate_url.json
    python -m devtools.invoke worker events/sqs.json
    python -m devtools.invoke s3_trigger events/s3_put.json

For an S3 event, each request object it names is first uploaded from ``events/<key>`` when that file exists
(``events/requests/sample fox request.json`` for ``events/s3_put.json``), as if the user had just put it.

The response goes to stdout as JSON; the function's log (RIE output) goes to stderr. Data and logs live
in a temporary directory unless ``--data-dir`` is given (presigned URLs die with the server anyway).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from devtools.local import REPO_ROOT, LocalStack
from devtools.procs import StartupError


def seed_request_objects(stack: LocalStack, event: dict[str, Any]) -> None:
    """Upload the request objects an S3 event names from events/<key>, into the stack's bucket."""
    for record in event.get("Records", []):
        key = unquote_plus(record.get("s3", {}).get("object", {}).get("key", ""))
        source = REPO_ROOT / "events" / key
        if key and source.is_file():
            record["s3"]["bucket"]["name"] = stack.bucket
            stack.s3_client().put_object(Bucket=stack.bucket, Key=key, Body=source.read_bytes())


def invoke(function: str, event: bytes, data_dir: Path, timeout: int = 29) -> tuple[bytes, str]:
    """Start S3, SQS and DynamoDB + one RIE for ``functions/<function>``, invoke once; returns (payload, function log)."""
    stack = LocalStack(data_dir=data_dir, port=0, s3_port=0, function=function, workers=1, timeout=timeout)
    try:
        stack.start_backends()
        document = json.loads(event)
        if isinstance(document.get("requestContext"), dict) and "requestTimeEpoch" in document["requestContext"]:
            # A replayed API event arrives now: the function's deadline counts API Gateway's 29 s from this time.
            document["requestContext"]["requestTimeEpoch"] = int(time.time() * 1000)
        seed_request_objects(stack, document)
        with stack.new_rie(0) as rie:
            answer = rie.invoke(json.dumps(document).encode(), timeout=timeout + 30)
        return answer.payload, rie.log_path.read_text(errors="replace")
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.invoke", description=__doc__.splitlines()[0])
    parser.add_argument("function", help="a directory under functions/, e.g. api")
    parser.add_argument("event", type=Path, help="an event JSON file, e.g. events/api_generate_url.json")
    parser.add_argument("--data-dir", type=Path, help="keep S3 data and logs here (default: a temporary directory)")
    args = parser.parse_args(argv)

    if not (REPO_ROOT / "functions" / args.function).is_dir():
        parser.error(f"no function directory functions/{args.function}")
    try:
        event = args.event.read_bytes()
        json.loads(event)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read a JSON event from {args.event}: {exc}")

    try:
        if args.data_dir is not None:
            payload, log = invoke(args.function, event, args.data_dir.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="imagegen-invoke-") as tmp:
                payload, log = invoke(args.function, event, Path(tmp))
    except StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    sys.stderr.write(log)
    try:
        print(json.dumps(json.loads(payload), indent=2))
    except ValueError:
        print(payload.decode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
