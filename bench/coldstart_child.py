"""One cold start, run as a script in a fresh interpreter with a Lambda-like environment and only the function's
own code and packages on the path (standard library only here, so it measures nothing of ours).

    python -S coldstart_child.py <module> <event.json>

Prints one JSON line: the time to import ``<module>`` (Lambda's init phase) and to serve the first event
(the first invoke, where lazy imports and client set-up land), both from this script's first line, and the CPU
time spent until then.

With ``BENCH_PIECES`` (a JSON list of ``[name, code]``), each piece of code runs first, in order, and the line also
has the CPU time of each piece, then of the rest of the import and of the first request: where a cold start's CPU
goes. A module a piece imports is then already loaded when the handler imports it, so each piece is charged what it
adds to the pieces before it.
"""

import sys

sys.path.pop(0)  # the bench/ directory: the handler must find only its own code and packages

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

started, started_cpu = time.perf_counter(), time.process_time()

import importlib  # noqa: E402
import uuid  # noqa: E402


class Context:
    """What the Lambda runtime passes: the fields Powertools and the handlers read."""

    function_name = "bench-function"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-function"
    log_group_name = "/aws/lambda/bench-function"
    log_stream_name = "bench"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + 29

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def run_pieces() -> dict[str, float]:
    """Each piece of BENCH_PIECES run in order: its CPU ms."""
    spent: dict[str, float] = {}
    for name, code in json.loads(os.environ.get("BENCH_PIECES", "[]")):
        before = time.process_time()
        exec(code, {})
        spent[name] = (time.process_time() - before) * 1000
    return spent


def main() -> None:
    module_name, event_path = sys.argv[1], sys.argv[2]
    pieces = run_pieces()
    with open(event_path) as file:
        event = json.load(file)
    # The request reached API Gateway as this process started: the cold start counts against its 29 s.
    event["requestContext"]["requestTimeEpoch"] = int((time.time() - (time.perf_counter() - started)) * 1000)
    before_import, before_import_cpu = time.perf_counter(), time.process_time()
    handler = importlib.import_module(module_name).lambda_handler
    imported, imported_cpu = time.perf_counter(), time.process_time()
    response = handler(event, Context())
    served, served_cpu = time.perf_counter(), time.process_time()
    if pieces:
        pieces["the rest of the handler's import"] = (imported_cpu - before_import_cpu) * 1000
        pieces["the first request"] = (served_cpu - imported_cpu) * 1000
    body = json.loads(response["body"])
    result = {
        "init_ms": (imported - started) * 1000,
        "import_ms": (imported - before_import) * 1000,
        "first_request_ms": (served - imported) * 1000,
        "total_ms": (served - started) * 1000,
        # CPU time of every thread of this process: what a busy, shared host cannot inflate much.
        "cpu_ms": (served_cpu - started_cpu) * 1000,
        "status": response["statusCode"],
        "urls": sum(1 for item in body.get("data", []) if item.get("url")),
        "error": body.get("error"),
        "pieces": pieces,
    }
    print("BENCH-RESULT " + json.dumps(result), flush=True)


main()
