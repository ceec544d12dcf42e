"""imagegen: the shared core of imagegen-serverless, shipped as a Lambda layer."""
