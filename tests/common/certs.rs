//! A throwaway PKI for the TLS tests: a CA, server certificates for 127.0.0.1/localhost and client
//! certificates with chosen subjects, all written as PEM files into a fresh temporary directory.

#![allow(dead_code)]

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::PathBuf;

/// A certificate and its private key as PEM files on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// The certificate path, for a config file (quoted).
    pub fn cert_conf(&self) -> String {
        quoted(&self.cert)
    }

    /// The key path, for a config file (quoted).
    pub fn key_conf(&self) -> String {
        quoted(&self.key)
    }
}

/// A path as a double-quoted config string.
pub fn quoted(path: &std::path::Path) -> String {
    format!("\"{}\"", path.display())
}

/// A certificate authority that issues certificates into its own directory.
pub struct Ca {
    pub dir: PathBuf,
    /// The CA certificate (PEM), to trust or to give the server as `ca_file`.
    pub cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    name: String,
}

fn validity(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2099, 1, 1);
}

impl Ca {
    /// A new CA named `name` (its subject is `CN=<name>,O=natter tests`) in a fresh temp dir.
    pub fn new(name: &str) -> Ca {
        let dir = super::temp_dir();
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        validity(&mut params);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "natter tests");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).expect("write CA cert");
        Ca {
            dir,
            cert: path,
            issuer: Issuer::new(params, key),
            name: name.to_string(),
        }
    }

    /// The CA certificate path, for a config file (quoted).
    pub fn cert_conf(&self) -> String {
        quoted(&self.cert)
    }

    fn issue(&self, file_stem: &str, params: CertificateParams) -> CertFiles {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let files = CertFiles {
            cert: self.dir.join(format!("{file_stem}-cert.pem")),
            key: self.dir.join(format!("{file_stem}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A server certificate valid for `127.0.0.1`, `::1` and `localhost`.
    pub fn server_cert(&self, file_stem: &str) -> CertFiles {
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .expect("server params");
        validity(&mut params);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file_stem, params)
    }

    /// A client certificate whose subject is `subject` in the order given (ASN.1 order, i.e. the
    /// reverse of the RFC 2253 string), with optional e-mail SANs.
    pub fn client_cert(
        &self,
        file_stem: &str,
        subject: &[(DnType, &str)],
        emails: &[&str],
    ) -> CertFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        validity(&mut params);
        let mut dn = DistinguishedName::new();
        for (ty, value) in subject {
            dn.push(ty.clone(), *value);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = emails
            .iter()
            .map(|e| SanType::Rfc822Name((*e).try_into().expect("ia5 email")))
            .collect();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file_stem, params)
    }
}
