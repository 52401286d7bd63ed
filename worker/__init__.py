"""The AWS Batch entrypoint: read the job, apply the idempotency rules, run the transcoder, report.

``python -m worker JOB_ID`` (console script ``transcode-worker``). Modules:

- ``settings``: the environment, read once (``ENVIRONMENT`` lists every variable);
- ``log``: JSON lines on stdout, secrets redacted;
- ``run``: the rules, the reports, the exit code (``exit_codes``, ``reasons``);
- ``supervise``/``progress``: the transcoding child's process and the throttled progress posts;
- ``child``: ``python -m worker.child``, the only part that imports the engine (PyAV, boto3);
- ``layout``/``outputs``/``playlists``: run prefixes, finding and reading a stored ladder back.

Importing this package (or ``worker.run``) imports neither ``av`` nor ``boto3``.
"""
