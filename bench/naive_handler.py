"""The handler people write first: the ``openai`` SDK and boto3, clients at module level, no validation.

It does the job this project does for one request: ask the provider for ``n`` images as base64, write each to S3
(SSE-S3, content type) and answer presigned URLs in OpenAI's shape. The cold-start benchmark runs it in a fresh
process next to the API function, against the same S3 server and the same fake OpenAI on loopback.
"""

import base64
import json
import os
import time

import boto3
from botocore.config import Config
from openai import OpenAI

BUCKET = os.environ["IMAGES_BUCKET"]
s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
client = OpenAI()  # OPENAI_API_KEY and OPENAI_BASE_URL from the environment


def lambda_handler(event, context):
    body = json.loads(event.get("body") or "{}")
    result = client.images.generate(
        model=body.get("model", "gpt-image-1-mini"),
        prompt=body["prompt"],
        n=body.get("n", 1),
        size=body.get("size", "1024x1024"),
    )  # GPT image models answer base64 and refuse response_format
    data = []
    for index, image in enumerate(result.data):
        key = f"images/{time.strftime('%Y/%m/%d')}/{context.aws_request_id}/{index}.png"
        s3.put_object(Bucket=BUCKET, Key=key, Body=base64.b64decode(image.b64_json), ContentType="image/png", ServerSideEncryption="AES256")
        url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600)
        data.append({"url": url})
    body = json.dumps({"created": result.created, "data": data})
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": body}
