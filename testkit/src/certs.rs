//! Throwaway certificates for mTLS between the deduplicator and the gatherers: a CA and leaf
//! certificates it issues (rcgen), for `kalshi-stack up` and the tests. Never for production
//! (infra/modules/pki makes those).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// When a leaf is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From an hour ago for `days`.
    Days(u32),
    /// It ended an hour ago (it was valid the day before).
    Expired,
}

/// A certificate authority that issues leaves.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A leaf certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `<dir>/<stem>.crt` and `<dir>/<stem>.key` (0600); returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        use std::os::unix::fs::PermissionsExt;
        let (c, k) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        write_atomically(&c, self.cert_pem.as_bytes())?;
        write_atomically(&k, self.key_pem.as_bytes())?;
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600))?;
        Ok((c, k))
    }
}

/// Writes through a temporary file and a rename, as a rotation must (a reader never sees half
/// a file).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn now_minus(d: Duration) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() - d
}

impl Ca {
    /// A new CA named `name`, valid for ten years.
    pub fn new(name: &str) -> Result<Ca, rcgen::Error> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = now_minus(Duration::from_secs(3600));
        p.not_after = p.not_before + Duration::from_secs(3650 * 86_400);
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok(Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A leaf for the DNS names `names` (the first is also its common name), usable by a
    /// server and a client.
    pub fn issue(&self, names: &[&str], validity: Validity) -> Result<Issued, rcgen::Error> {
        let mut p =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        if let Some(first) = names.first() {
            p.distinguished_name.push(DnType::CommonName, *first);
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        match validity {
            Validity::Days(d) => {
                p.not_before = now_minus(Duration::from_secs(3600));
                p.not_after = p.not_before + Duration::from_secs(u64::from(d) * 86_400);
            }
            Validity::Expired => {
                p.not_before = now_minus(Duration::from_secs(2 * 86_400));
                p.not_after = now_minus(Duration::from_secs(3600));
            }
        }
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The files of one mTLS set-up: a CA, a certificate per gatherer (named after its id) and
/// the deduplicator's client certificate (named `deduplicator`).
#[derive(Debug, Clone)]
pub struct MtlsFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    /// `(gatherer id, cert, key)`.
    pub gatherers: Vec<(String, PathBuf, PathBuf)>,
    pub deduplicator: (PathBuf, PathBuf),
}

impl MtlsFiles {
    pub fn gatherer(&self, id: &str) -> Option<(&Path, &Path)> {
        self.gatherers
            .iter()
            .find(|g| g.0 == id)
            .map(|g| (g.1.as_path(), g.2.as_path()))
    }
}

/// The name the deduplicator's client certificate carries (gatherers' `allowed_clients`).
pub const DEDUPLICATOR_NAME: &str = "deduplicator";

/// Makes a CA and every certificate under `dir` (created, 0700), valid for a year.
pub fn write_mtls_set(dir: &Path, gatherer_ids: &[String]) -> anyhow::Result<(Ca, MtlsFiles)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let ca = Ca::new("kalshi-data throwaway CA")?;
    let ca_path = dir.join("ca.crt");
    write_atomically(&ca_path, ca.pem().as_bytes())?;
    let mut gatherers = Vec::new();
    for id in gatherer_ids {
        let (c, k) = ca
            .issue(&[id.as_str()], Validity::Days(365))?
            .write(dir, id)?;
        gatherers.push((id.clone(), c, k));
    }
    let deduplicator = ca
        .issue(&[DEDUPLICATOR_NAME], Validity::Days(365))?
        .write(dir, DEDUPLICATOR_NAME)?;
    Ok((
        ca,
        MtlsFiles {
            dir: dir.to_path_buf(),
            ca: ca_path,
            gatherers,
            deduplicator,
        },
    ))
}
