//! Key and certificate material from files: the Kalshi API key (`Signer::from_pem`, and the
//! simulator's `Verifier::from_pem`), the mTLS PEM files (certificates and private keys, as
//! `shared::tls` reads them) and the DER validity `x509::validity` reports for every
//! certificate. Never a panic; a key's error never quotes the key.
#![no_main]

use kalshi_shared::auth::{Signer, Verifier};
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fuzz_target!(|data: &[u8]| {
    if let Err(e) = Signer::from_pem("key-id", data) {
        let _ = e.to_string();
    }
    let _ = Verifier::from_pem(data);
    let _ = PrivateKeyDer::from_pem_slice(data);
    for cert in CertificateDer::pem_slice_iter(data).flatten() {
        if let Ok((not_before, not_after)) = kalshi_shared::x509::validity(&cert) {
            let _ = not_after.checked_sub(not_before);
        }
    }
    // The DER parser on raw bytes too: it must stand on its own.
    let _ = kalshi_shared::x509::validity(data);
});
