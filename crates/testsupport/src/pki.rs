//! A throw-away certificate authority for TLS tests: a CA, a server certificate for
//! `127.0.0.1`/`localhost`, and client certificates with chosen common names, written as PEM
//! files in a temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// A CA and the files made with it.
pub struct TestPki {
    dir: TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    /// Makes a fresh CA named `name` and writes `ca.pem`, `server.pem` (certificate for
    /// `127.0.0.1` and `localhost`), `server-key.pem` and `server-bundle.pem` (both).
    pub fn generate(name: &str) -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("commissaire-pki-")
            .tempdir()
            .expect("create a temporary directory for certificates");
        let (ca, issuer) = make_ca(name);
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        let pki = TestPki { dir, issuer };
        let (cert, key) = pki.leaf(
            "localhost",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        pki.write("server.pem", &cert);
        pki.write("server-key.pem", &key);
        pki.write("server-bundle.pem", &format!("{cert}{key}"));
        pki
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text)
            .unwrap_or_else(|e| panic!("write {name}: {e}"));
    }

    fn leaf(&self, cn: &str, sans: &[&str], eku: ExtendedKeyUsagePurpose) -> (String, String) {
        let (cert, key) = make_leaf(&self.issuer, cn, sans, eku);
        (cert.pem(), key.serialize_pem())
    }

    /// Makes a client certificate with common name `cn`; answers the path of a PEM file
    /// holding the certificate and then its key (what `reqwest::Identity::from_pem` reads).
    pub fn client(&self, cn: &str) -> PathBuf {
        let (cert, key) = self.leaf(cn, &[], ExtendedKeyUsagePurpose::ClientAuth);
        let name = format!("client-{cn}.pem");
        self.write(&name, &format!("{cert}{key}"));
        self.dir.path().join(name)
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate followed by its key (what `tls-pemfile` wants).
    pub fn server_bundle_path(&self) -> PathBuf {
        self.dir.path().join("server-bundle.pem")
    }

    /// The server certificate (PEM).
    pub fn server_cert_path(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server key (PEM).
    pub fn server_key_path(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }
}

/// A self-signed CA named `cn`: its certificate (DER and PEM) and an issuer to sign with.
pub(crate) fn make_ca(cn: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("generate a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-sign the CA");
    (cert, Issuer::new(params, key))
}

/// A leaf certificate for `sans` (and CN `cn`) with extended key usage `eku`, signed by `ca`.
pub(crate) fn make_leaf(
    ca: &Issuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    eku: ExtendedKeyUsagePurpose,
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("generate a key");
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("certificate parameters");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, ca).expect("sign the certificate");
    (cert, key)
}
