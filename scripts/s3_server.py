#!/usr/bin/env python3
"""A local S3-compatible server for Apiary's tests: moto's S3 on 127.0.0.1.

moto's stock server checks a conditional create (If-None-Match: *) and writes the object in
separate steps on a threaded server, so two racing creates of one key can both succeed. This
launcher serves moto's WSGI application behind one lock: requests are handled one at a time,
which makes a conditional create atomic, as on a real S3.

With --check-credentials the server checks credentials and signatures like AWS: it creates
one IAM user allowed every S3 action, and accepts only that user's access key.

Usage: s3_server.py [--port N] [--bucket NAME ...] [--check-credentials]
Prints "port N" once the server listens and the buckets exist (and, with
--check-credentials, "key ACCESS_KEY_ID SECRET_ACCESS_KEY"), then serves until killed.
"""

import argparse
import json
import sys
import threading
import urllib.request

import boto3
from moto import settings
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


class Serialised:
    """A WSGI application that lets one request at a time into `app`."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            body = self.app(environ, start_response)
            try:
                data = b"".join(body)
            finally:
                if hasattr(body, "close"):
                    body.close()
        return [data]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket")
    parser.add_argument(
        "--check-credentials",
        action="store_true",
        help="accept only the printed key, with valid signatures",
    )
    args = parser.parse_args()

    app = Serialised(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for bucket in args.bucket:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
        urllib.request.urlopen(request).read()
    print(f"port {port}", flush=True)
    if args.check_credentials:
        key, secret = one_user(f"http://127.0.0.1:{port}")
        # From here on every request is authenticated and authorised.
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        print(f"key {key} {secret}", flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


def one_user(endpoint):
    """An IAM user allowed every S3 action, and its access key."""
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam.create_user(UserName="apiary")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="apiary", PolicyName="s3", PolicyDocument=json.dumps(policy))
    created = iam.create_access_key(UserName="apiary")["AccessKey"]
    return created["AccessKeyId"], created["SecretAccessKey"]


if __name__ == "__main__":
    sys.exit(main())
