//! Kalshi API-key request signing and verification.
//!
//! Every REST call and the WebSocket upgrade carry `KALSHI-ACCESS-KEY` (the key id),
//! `KALSHI-ACCESS-TIMESTAMP` (Unix milliseconds) and `KALSHI-ACCESS-SIGNATURE`: standard padded
//! base64 of an RSA-PSS (SHA-256, MGF1-SHA-256, salt = 32 bytes) signature over
//! `timestamp + METHOD + path`, where `path` has its query string removed. Ed25519 keys, which
//! Kalshi's newest SDK also accepts, sign the same message.
//!
//! Keys are PEM: PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`) private keys, and SPKI
//! (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`) public keys. Key material never appears in
//! `Debug` output or in error messages.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey};

pub const HEADER_KEY: &str = "KALSHI-ACCESS-KEY";
pub const HEADER_TIMESTAMP: &str = "KALSHI-ACCESS-TIMESTAMP";
pub const HEADER_SIGNATURE: &str = "KALSHI-ACCESS-SIGNATURE";

/// Why a key could not be loaded or a request signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("key is not valid PEM: {0}")]
    Pem(String),
    #[error(
        "PEM block {0:?} is not a supported key type (expected PRIVATE KEY, RSA PRIVATE KEY, PUBLIC KEY or RSA PUBLIC KEY)"
    )]
    UnsupportedPem(String),
    #[error("encrypted private keys are not supported; decrypt the key file first")]
    Encrypted,
    #[error("key is not a usable RSA (2048-8192 bit) or Ed25519 key: {0}")]
    Rejected(String),
    #[error("signing failed")]
    SignFailed,
}

/// The signed string: `timestamp + METHOD + path` with any query string removed.
pub fn signing_message(timestamp_ms: &str, method: &str, path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    format!("{timestamp_ms}{}{path}", method.to_ascii_uppercase())
}

/// The three authentication headers of one request.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthHeaders {
    pub key_id: String,
    pub timestamp_ms: String,
    pub signature_b64: String,
}

impl AuthHeaders {
    /// `(name, value)` pairs ready to set on a request.
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            (HEADER_KEY, &self.key_id),
            (HEADER_TIMESTAMP, &self.timestamp_ms),
            (HEADER_SIGNATURE, &self.signature_b64),
        ]
    }
}

impl fmt::Debug for AuthHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHeaders")
            .field("key_id", &self.key_id)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("signature_b64", &"<redacted>")
            .finish()
    }
}

enum PrivateKey {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// The signer in use, replaced at run time when a rotated key is reloaded (SIGHUP): every
/// request and every WebSocket connect signs with the key current at that moment, and nothing
/// restarts. Readers take a clone of the `Arc`, so a replace never waits on a signature.
#[derive(Debug)]
pub struct LiveSigner {
    current: std::sync::RwLock<std::sync::Arc<Signer>>,
}

impl LiveSigner {
    pub fn new(signer: Signer) -> Self {
        Self {
            current: std::sync::RwLock::new(std::sync::Arc::new(signer)),
        }
    }

    /// The signer to use now.
    pub fn current(&self) -> std::sync::Arc<Signer> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `signer` in use from the next signature on.
    pub fn replace(&self, signer: Signer) {
        let next = std::sync::Arc::new(signer);
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}

/// Signs requests with one API key.
pub struct Signer {
    key_id: String,
    key: PrivateKey,
    rng: SystemRandom,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.key {
            PrivateKey::Rsa(_) => "rsa-pss-sha256",
            PrivateKey::Ed25519(_) => "ed25519",
        };
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("algorithm", &kind)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads a private key from PEM text.
    pub fn from_pem(key_id: impl Into<String>, pem_text: &[u8]) -> Result<Self, KeyError> {
        let block = parse_pem(pem_text)?;
        let key = match block.tag() {
            "RSA PRIVATE KEY" => PrivateKey::Rsa(
                RsaKeyPair::from_der(block.contents())
                    .map_err(|e| KeyError::Rejected(e.to_string()))?,
            ),
            "PRIVATE KEY" => match RsaKeyPair::from_pkcs8(block.contents()) {
                Ok(k) => PrivateKey::Rsa(k),
                Err(rsa_err) => PrivateKey::Ed25519(
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(block.contents()).map_err(|_| {
                        KeyError::Rejected(format!("not RSA ({rsa_err}) and not Ed25519"))
                    })?,
                ),
            },
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            other => return Err(KeyError::UnsupportedPem(other.to_owned())),
        };
        Ok(Self {
            key_id: key_id.into(),
            key,
            rng: SystemRandom::new(),
        })
    }

    /// Loads a private key from a PEM file.
    pub fn from_file(key_id: impl Into<String>, path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|e| KeyError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_pem(key_id, &bytes)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `message` and returns the raw signature bytes.
    pub fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.key {
            PrivateKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&signature::RSA_PSS_SHA256, &self.rng, message, &mut sig)
                    .map_err(|_| KeyError::SignFailed)?;
                Ok(sig)
            }
            PrivateKey::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }

    /// Headers for a request at `timestamp_ms` (Unix milliseconds).
    pub fn sign_at(
        &self,
        method: &str,
        path: &str,
        timestamp_ms: i64,
    ) -> Result<AuthHeaders, KeyError> {
        let ts = timestamp_ms.to_string();
        let sig = self.sign_message(signing_message(&ts, method, path).as_bytes())?;
        Ok(AuthHeaders {
            key_id: self.key_id.clone(),
            timestamp_ms: ts,
            signature_b64: BASE64.encode(sig),
        })
    }

    /// Headers for a request now.
    pub fn sign(&self, method: &str, path: &str) -> Result<AuthHeaders, KeyError> {
        self.sign_at(method, path, crate::time::now_ms())
    }

    /// The matching public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> String {
        let spki = match &self.key {
            PrivateKey::Rsa(k) => der::spki(der::OID_RSA, true, k.public().as_ref()),
            PrivateKey::Ed25519(k) => der::spki(der::OID_ED25519, false, k.public_key().as_ref()),
        };
        pem::encode(&pem::Pem::new("PUBLIC KEY", spki))
    }

    /// A verifier for this key's signatures.
    pub fn verifier(&self) -> Verifier {
        match &self.key {
            PrivateKey::Rsa(k) => Verifier {
                key: PublicKey::Rsa(k.public().as_ref().to_vec()),
                key_id: None,
            },
            PrivateKey::Ed25519(k) => Verifier {
                key: PublicKey::Ed25519(k.public_key().as_ref().to_vec()),
                key_id: None,
            },
        }
    }
}

fn parse_pem(text: &[u8]) -> Result<pem::Pem, KeyError> {
    pem::parse(text).map_err(|e| KeyError::Pem(e.to_string()))
}

#[derive(Clone)]
enum PublicKey {
    /// PKCS#1 `RSAPublicKey` DER.
    Rsa(Vec<u8>),
    /// The raw 32-byte key.
    Ed25519(Vec<u8>),
}

/// Why a signed request was refused. Each maps to HTTP 401 in a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("unknown API key id")]
    UnknownKey,
    #[error("{HEADER_TIMESTAMP} must be Unix milliseconds as decimal digits")]
    BadTimestamp,
    #[error("request timestamp is {skew_ms} ms away from server time (allowed {max_skew_ms} ms)")]
    Skew { skew_ms: i64, max_skew_ms: i64 },
    #[error("{HEADER_SIGNATURE} is not valid base64")]
    BadEncoding,
    #[error("signature does not verify")]
    BadSignature,
}

/// The authentication headers of a received request, each possibly missing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceivedHeaders<'a> {
    pub key_id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Verifies request signatures against one public key (a simulator's view of one API key).
#[derive(Clone)]
pub struct Verifier {
    key: PublicKey,
    key_id: Option<String>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Loads a public key from PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`); a private-key PEM is
    /// accepted too and its public half used.
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, KeyError> {
        let block = parse_pem(pem_text)?;
        let key = match block.tag() {
            "PUBLIC KEY" => {
                let (oid, key) = der::parse_spki(block.contents())
                    .map_err(|e| KeyError::Rejected(e.to_string()))?;
                if oid == der::OID_RSA {
                    PublicKey::Rsa(key.to_vec())
                } else if oid == der::OID_ED25519 {
                    PublicKey::Ed25519(key.to_vec())
                } else {
                    return Err(KeyError::Rejected(
                        "unsupported public key algorithm".into(),
                    ));
                }
            }
            "RSA PUBLIC KEY" => PublicKey::Rsa(block.contents().to_vec()),
            "RSA PRIVATE KEY" | "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
                return Signer::from_pem("", pem_text).map(|s| s.verifier());
            }
            other => return Err(KeyError::UnsupportedPem(other.to_owned())),
        };
        Ok(Self { key, key_id: None })
    }

    /// Requires `KALSHI-ACCESS-KEY` to equal `key_id`.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// Checks a raw signature over `message`.
    pub fn verify_message(&self, message: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        let ok = match &self.key {
            PublicKey::Rsa(der) => {
                UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, der)
                    .verify(message, sig)
                    .is_ok()
            }
            PublicKey::Ed25519(raw) => UnparsedPublicKey::new(&signature::ED25519, raw)
                .verify(message, sig)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }

    /// Checks the three headers of a request to `method path` received at `now_ms`.
    pub fn verify(
        &self,
        headers: &ReceivedHeaders<'_>,
        method: &str,
        path: &str,
        now_ms: i64,
        max_skew_ms: i64,
    ) -> Result<(), VerifyError> {
        let key_id = headers
            .key_id
            .ok_or(VerifyError::MissingHeader(HEADER_KEY))?;
        let timestamp = headers
            .timestamp
            .ok_or(VerifyError::MissingHeader(HEADER_TIMESTAMP))?;
        let signature_b64 = headers
            .signature
            .ok_or(VerifyError::MissingHeader(HEADER_SIGNATURE))?;
        if let Some(expected) = &self.key_id
            && expected != key_id
        {
            return Err(VerifyError::UnknownKey);
        }
        let ts = check_timestamp(timestamp)?;
        let skew_ms = now_ms.saturating_sub(ts).saturating_abs();
        if skew_ms > max_skew_ms {
            return Err(VerifyError::Skew {
                skew_ms,
                max_skew_ms,
            });
        }
        let sig = BASE64
            .decode(signature_b64.trim())
            .map_err(|_| VerifyError::BadEncoding)?;
        self.verify_message(signing_message(timestamp, method, path).as_bytes(), &sig)
    }
}

/// A timestamp must be 1-19 ASCII digits; anything else is not Unix milliseconds.
pub fn check_timestamp(text: &str) -> Result<i64, VerifyError> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::BadTimestamp);
    }
    text.parse().map_err(|_| VerifyError::BadTimestamp)
}

mod der;

#[cfg(test)]
mod tests {
    use super::*;

    const PKCS1: &[u8] = include_bytes!("../testdata/rsa-pkcs1.pem");
    const PKCS8: &[u8] = include_bytes!("../testdata/rsa-pkcs8.pem");
    const PUBLIC: &[u8] = include_bytes!("../testdata/rsa-public.pem");
    const ED25519: &[u8] = include_bytes!("../testdata/ed25519-pkcs8.pem");

    fn received<'a>(key: &'a str, ts: &'a str, sig: &'a str) -> ReceivedHeaders<'a> {
        ReceivedHeaders {
            key_id: Some(key),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn message_strips_the_query_and_uppercases_the_method() {
        assert_eq!(
            signing_message(
                "1700000000000",
                "get",
                "/trade-api/v2/markets/trades?limit=5&cursor=x"
            ),
            "1700000000000GET/trade-api/v2/markets/trades"
        );
        assert_eq!(
            signing_message("1", "GET", "/trade-api/ws/v2"),
            "1GET/trade-api/ws/v2"
        );
    }

    #[test]
    fn pkcs1_and_pkcs8_keys_sign_and_verify() {
        let verifier = Verifier::from_pem(PUBLIC).unwrap();
        for pem in [PKCS1, PKCS8] {
            let signer = Signer::from_pem("key-1", pem).unwrap();
            let h = signer
                .sign_at("GET", "/trade-api/v2/markets?x=1", 1_700_000_000_000)
                .unwrap();
            assert_eq!(h.key_id, "key-1");
            assert_eq!(h.timestamp_ms, "1700000000000");
            verifier
                .verify(
                    &received(&h.key_id, &h.timestamp_ms, &h.signature_b64),
                    "GET",
                    "/trade-api/v2/markets",
                    1_700_000_001_000,
                    5_000,
                )
                .unwrap();
            // The derived public key is the same key.
            let derived = Verifier::from_pem(signer.public_key_pem().as_bytes()).unwrap();
            derived
                .verify(
                    &received("k", &h.timestamp_ms, &h.signature_b64),
                    "GET",
                    "/trade-api/v2/markets",
                    1_700_000_000_000,
                    0,
                )
                .unwrap();
        }
    }

    #[test]
    fn verification_rejects_each_kind_of_bad_request() {
        let signer = Signer::from_pem("key-1", PKCS8).unwrap();
        let verifier = Verifier::from_pem(PUBLIC).unwrap().with_key_id("key-1");
        let h = signer
            .sign_at("GET", "/trade-api/ws/v2", 1_000_000)
            .unwrap();
        let check = |key: Option<&str>, ts: Option<&str>, sig: Option<&str>, path: &str, now| {
            let h = ReceivedHeaders {
                key_id: key,
                timestamp: ts,
                signature: sig,
            };
            verifier.verify(&h, "GET", path, now, 10_000)
        };
        let (k, t, s) = (
            Some(h.key_id.as_str()),
            Some(h.timestamp_ms.as_str()),
            Some(h.signature_b64.as_str()),
        );
        assert_eq!(check(k, t, s, "/trade-api/ws/v2", 1_000_000), Ok(()));
        assert_eq!(
            check(None, t, s, "/trade-api/ws/v2", 1_000_000),
            Err(VerifyError::MissingHeader(HEADER_KEY))
        );
        assert_eq!(
            check(Some("other"), t, s, "/trade-api/ws/v2", 1_000_000),
            Err(VerifyError::UnknownKey)
        );
        assert_eq!(
            check(k, t, s, "/trade-api/v2/markets", 1_000_000),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            check(k, t, s, "/trade-api/ws/v2", 1_020_000),
            Err(VerifyError::Skew {
                skew_ms: 20_000,
                max_skew_ms: 10_000
            })
        );
        assert_eq!(
            check(k, Some("1000.5"), s, "/trade-api/ws/v2", 1_000_000),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            check(k, t, Some("%%%"), "/trade-api/ws/v2", 1_000_000),
            Err(VerifyError::BadEncoding)
        );
        // A signature by another key does not verify.
        let other = Signer::from_pem("key-1", ED25519).unwrap();
        let h2 = other.sign_at("GET", "/trade-api/ws/v2", 1_000_000).unwrap();
        assert_eq!(
            check(k, t, Some(&h2.signature_b64), "/trade-api/ws/v2", 1_000_000),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn ed25519_keys_work() {
        let signer = Signer::from_pem("ed", ED25519).unwrap();
        let verifier = Verifier::from_pem(signer.public_key_pem().as_bytes()).unwrap();
        let h = signer.sign_at("GET", "/trade-api/ws/v2", 5).unwrap();
        verifier
            .verify(
                &received("ed", "5", &h.signature_b64),
                "GET",
                "/trade-api/ws/v2",
                5,
                0,
            )
            .unwrap();
    }

    #[test]
    fn key_errors_are_clear_and_never_contain_key_material() {
        assert!(matches!(
            Signer::from_pem("k", b"garbage"),
            Err(KeyError::Pem(_))
        ));
        assert!(matches!(
            Signer::from_pem("k", PUBLIC),
            Err(KeyError::UnsupportedPem(t)) if t == "PUBLIC KEY"
        ));
        let enc =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(Signer::from_pem("k", enc).unwrap_err(), KeyError::Encrypted);
        let bad = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            Signer::from_pem("k", bad),
            Err(KeyError::Rejected(_))
        ));
        let missing = Signer::from_file("k", Path::new("/nonexistent/key.pem")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/key.pem"));
        let signer = Signer::from_pem("key-id-1", PKCS1).unwrap();
        let dbg = format!("{signer:?}");
        assert!(dbg.contains("key-id-1") && !dbg.contains("MII"), "{dbg}");
        let h = signer.sign("GET", "/x").unwrap();
        assert!(!format!("{h:?}").contains(&h.signature_b64));
    }
}
