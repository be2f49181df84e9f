#!/usr/bin/env python3
"""Independent counterpart for kalshi-shared's signing tests, using Python's `cryptography`
(what Kalshi's SDK uses). Reads one JSON request on stdin, writes one JSON answer on stdout.

  {"op": "sign", "key": PEM_PATH, "timestamp": "...", "method": "GET", "path": "/..."}
      -> {"signature": BASE64}
  {"op": "verify", "public_key": PEM_PATH, "timestamp": ..., "method": ..., "path": ..., "signature": BASE64}
      -> {"valid": true|false}
"""
import base64
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def message(req):
    return f"{req['timestamp']}{req['method'].upper()}{req['path'].split('?')[0]}".encode()


def main():
    req = json.load(sys.stdin)
    if req["op"] == "sign":
        with open(req["key"], "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            sig = key.sign(message(req), PSS, hashes.SHA256())
        else:
            sig = key.sign(message(req))
        json.dump({"signature": base64.b64encode(sig).decode()}, sys.stdout)
    elif req["op"] == "verify":
        with open(req["public_key"], "rb") as f:
            key = serialization.load_pem_public_key(f.read())
        sig = base64.b64decode(req["signature"], validate=True)
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(sig, message(req), PSS, hashes.SHA256())
            else:
                key.verify(sig, message(req))
            json.dump({"valid": True}, sys.stdout)
        except InvalidSignature:
            json.dump({"valid": False}, sys.stdout)
    else:
        sys.exit(f"unknown op {req['op']!r}")


if __name__ == "__main__":
    main()
