"""The caller id of an API key, as BUDGETS, USAGE_ADMIN_KEYS and the Usage API's api_key_id name it:
``python -m devtools.key_id`` reads the key from standard input (kept out of the shell's history), or takes it as
its argument. The id is a SHA-256 fingerprint (imagegen.auth.key_fingerprint): it cannot be turned back into the key."""

from __future__ import annotations

import sys

from imagegen.auth import key_fingerprint


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    key = args[0] if args else sys.stdin.readline()
    key = key.strip()
    if not key:
        print("usage: python -m devtools.key_id <api key>   (or the key on standard input)", file=sys.stderr)
        return 2
    print(key_fingerprint(key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
