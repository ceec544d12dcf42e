"""The least a handler can import to do the job: the standard library's HTTP client and boto3 (which the Lambda
runtime ships). No validation, no error mapping, no logs: the cold-start floor the other handlers are compared to.
"""

import base64
import json
import os
import time
import urllib.request

import boto3
from botocore.config import Config

BUCKET = os.environ["IMAGES_BUCKET"]
s3 = boto3.client("s3", config=Config(signature_version="s3v4"))


def lambda_handler(event, context):
    body = json.loads(event.get("body") or "{}")
    payload = {"model": body.get("model", "gpt-image-1-mini"), "prompt": body["prompt"], "n": body.get("n", 1)}
    payload |= {"size": body.get("size", "1024x1024")}  # GPT image models answer base64 and refuse response_format
    request = urllib.request.Request(
        os.environ["OPENAI_BASE_URL"].rstrip("/") + "/images/generations",
        data=json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=25) as response:
        result = json.load(response)
    data = []
    for index, image in enumerate(result["data"]):
        key = f"images/{time.strftime('%Y/%m/%d')}/{context.aws_request_id}/{index}.png"
        data_bytes = base64.b64decode(image["b64_json"])
        s3.put_object(Bucket=BUCKET, Key=key, Body=data_bytes, ContentType="image/png", ServerSideEncryption="AES256")
        url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600)
        data.append({"url": url})
    body = json.dumps({"created": result["created"], "data": data})
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": body}
