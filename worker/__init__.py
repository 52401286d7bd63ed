"""The AWS Batch entrypoint: read the job, apply the idempotency rules, run the transcoder, report."""
