#!/usr/bin/env python3
"""Generates the test keys and signature vectors in this folder with Python's `cryptography`
package (the library Kalshi's own SDK signs with), so kalshi-shared's signing is checked against
an independent implementation. Test-only keys: never use them anywhere else.

Run from this folder: ../../target/venv/bin/python3 gen_keys_and_vectors.py (after `./dev check`)
"""
import base64
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ed_key = ed25519.Ed25519PrivateKey.generate()


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)


write("rsa-pkcs1.pem", rsa_key.private_bytes(serialization.Encoding.PEM,
      serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
write("rsa-pkcs8.pem", rsa_key.private_bytes(serialization.Encoding.PEM,
      serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
write("rsa-public.pem", rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
      serialization.PublicFormat.SubjectPublicKeyInfo))
write("rsa-public-pkcs1.pem", rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
      serialization.PublicFormat.PKCS1))
write("ed25519-pkcs8.pem", ed_key.private_bytes(serialization.Encoding.PEM,
      serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def kalshi_sign(key, ts, method, path):
    # Exactly what kalshi_python_async/auth.py does.
    message = f"{ts}{method}{path.split('?')[0]}".encode()
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                       salt_length=padding.PSS.DIGEST_LENGTH), hashes.SHA256())
    else:
        sig = key.sign(message)
    return base64.b64encode(sig).decode()


vectors = []
for key_name, key in (("rsa", rsa_key), ("ed25519", ed_key)):
    for ts, method, path in (
        ("1700000000000", "GET", "/trade-api/ws/v2"),
        ("1758045255469", "GET", "/trade-api/v2/markets/trades?ticker=KXHIGHNY-26NOV22-B53.5&limit=1000"),
        ("1", "GET", "/trade-api/v2/markets"),
    ):
        vectors.append({"key": key_name, "timestamp": ts, "method": method, "path": path,
                        "signature": kalshi_sign(key, ts, method, path)})
with open("python-signatures.json", "w") as f:
    json.dump(vectors, f, indent=1)
    f.write("\n")
