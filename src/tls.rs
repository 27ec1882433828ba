//! TLS for client connections: the rustls server configuration a `tls { }` block describes, the
//! user names a verified client certificate maps to (`verify_and_map`), and a test for whether
//! the first bytes a client sends begin a TLS handshake.
//!
//! Everything here uses rustls' ring provider explicitly, so nothing depends on a process-wide
//! default `CryptoProvider` being installed. TLS 1.2 and 1.3 are offered, as nats-server does by
//! default.
//!
//! # Mapping certificates to users
//!
//! With `verify_and_map`, nats-server (2.15) looks for a configured user named after the
//! client's (leaf) certificate, trying in this order, and takes the first name that is a user:
//!
//! 1. each e-mail address in the subject alternative names, in certificate order;
//! 2. each DNS name there;
//! 3. each URI there (IP addresses are not tried);
//! 4. the subject as one string, written the way Go's `pkix.Name` renders it (see
//!    [`peer_identities`]);
//! 5. any user whose name, read as an RFC 4514 distinguished name, holds the same relative
//!    distinguished names as the subject in any order (see [`subject_matches`]).
//!
//! Names in steps 1-4 must match byte for byte (case matters). [`map_user`] runs all five steps.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};
use x509_parser::asn1_rs::Tag;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

pub use tokio_rustls::TlsAcceptor;

use crate::config::parse::Pos;
use crate::config::security::Tls;

/// Which file of the `tls` block an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// `cert_file`: the server's certificate chain.
    Cert,
    /// `key_file`: the server's private key.
    Key,
    /// `ca_file`: the CAs client certificates must chain to.
    Ca,
}

impl fmt::Display for TlsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsFile::Cert => "cert_file",
            TlsFile::Key => "key_file",
            TlsFile::Ca => "ca_file",
        })
    }
}

/// What is wrong with a `tls` block.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The file could not be read.
    Unreadable {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not well-formed PEM.
    BadPem {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// The PEM parser's complaint.
        detail: String,
    },
    /// `cert_file` (or `ca_file`) holds no `CERTIFICATE` block.
    NoCertificate {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// The file holds a private key instead (the two files are probably swapped).
        found_key: bool,
    },
    /// A certificate in the file is not a valid X.509 certificate.
    BadCertificate {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What rustls or webpki said.
        detail: String,
    },
    /// `key_file` holds no usable private key block.
    NoPrivateKey {
        /// Its path.
        path: PathBuf,
        /// The key is encrypted (not supported).
        encrypted: bool,
    },
    /// The private key is of a kind rustls cannot sign with.
    BadPrivateKey {
        /// Its path.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },
    /// The private key is not the key of the first certificate in `cert_file`.
    KeyMismatch {
        /// `cert_file`.
        cert: PathBuf,
        /// `key_file`.
        key: PathBuf,
    },
    /// `verify` or `verify_and_map` without `ca_file`.
    VerifyWithoutCa,
    /// Anything else rustls refused.
    Other(String),
}

/// A `tls` block that cannot be turned into a server configuration. Its `Display` names the
/// file and what is wrong with it, after the block's position in the config file when known.
#[derive(Debug)]
pub struct TlsError {
    pos: Option<Pos>,
    kind: TlsErrorKind,
}

impl TlsError {
    /// What went wrong.
    pub fn kind(&self) -> &TlsErrorKind {
        &self.kind
    }

    /// Where the `tls` block is, if known.
    pub fn pos(&self) -> Option<&Pos> {
        self.pos.as_ref()
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(pos) = &self.pos {
            write!(f, "{pos}: ")?;
        }
        match &self.kind {
            TlsErrorKind::Unreadable { file, path, source } => {
                write!(f, "tls {file} {}: cannot read it: {source}", show(path))
            }
            TlsErrorKind::BadPem { file, path, detail } => {
                write!(f, "tls {file} {}: malformed PEM: {detail}", show(path))
            }
            TlsErrorKind::NoCertificate {
                file,
                path,
                found_key,
            } => {
                write!(
                    f,
                    "tls {file} {}: no certificate in it (expected a PEM \"CERTIFICATE\" block)",
                    show(path)
                )?;
                if *found_key {
                    f.write_str(
                        ", but it holds a private key: are cert_file and key_file swapped?",
                    )?;
                }
                Ok(())
            }
            TlsErrorKind::BadCertificate { file, path, detail } => {
                write!(
                    f,
                    "tls {file} {}: invalid certificate: {detail}",
                    show(path)
                )
            }
            TlsErrorKind::NoPrivateKey {
                path,
                encrypted: true,
            } => write!(
                f,
                "tls key_file {}: the private key is encrypted, which is not supported",
                show(path)
            ),
            TlsErrorKind::NoPrivateKey {
                path,
                encrypted: false,
            } => write!(
                f,
                "tls key_file {}: no private key in it (expected a PEM \"PRIVATE KEY\", \
                 \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)",
                show(path)
            ),
            TlsErrorKind::BadPrivateKey { path, detail } => {
                write!(
                    f,
                    "tls key_file {}: unusable private key: {detail}",
                    show(path)
                )
            }
            TlsErrorKind::KeyMismatch { cert, key } => write!(
                f,
                "tls key_file {}: private key does not match the certificate in cert_file {}",
                show(key),
                show(cert)
            ),
            TlsErrorKind::VerifyWithoutCa => f.write_str(
                "tls: verify and verify_and_map require ca_file (the system trust store is not \
                 used)",
            ),
            TlsErrorKind::Other(detail) => write!(f, "tls: {detail}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            TlsErrorKind::Unreadable { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn show(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// The rustls server configuration for a `tls` block: the certificate chain and key from
/// `cert_file` and `key_file` (PEM; PKCS#8, PKCS#1 RSA and SEC1 EC keys), and with `verify` or
/// `verify_and_map`, client certificates required and verified against `ca_file`. `ca_file` is
/// read (and must hold certificates) even without `verify`, as nats-server does.
pub fn server_config(tls: &Tls) -> Result<Arc<ServerConfig>, TlsError> {
    let fail = |kind| TlsError {
        pos: tls.pos.clone(),
        kind,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let chain = load_certs(TlsFile::Cert, &tls.cert_file).map_err(fail)?;
    let key = load_key(&tls.key_file).map_err(fail)?;
    let certified = certified_key(&provider, chain, key, tls).map_err(fail)?;

    let roots = match &tls.ca_file {
        Some(path) => Some(load_roots(path).map_err(fail)?),
        None => None,
    };

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(TlsErrorKind::Other(e.to_string())))?;
    let builder = if tls.verify || tls.verify_and_map {
        let roots = roots.ok_or_else(|| fail(TlsErrorKind::VerifyWithoutCa))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| fail(TlsErrorKind::Other(format!("client verifier: {e}"))))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    Ok(Arc::new(config))
}

/// The acceptor that runs server-side handshakes with `config`.
pub fn acceptor(config: Arc<ServerConfig>) -> TlsAcceptor {
    TlsAcceptor::from(config)
}

/// Whether `first_bytes` (what a client sent first, however little) begin a TLS handshake
/// record: content type 22 (handshake), then major version 3, then a minor version of at most 4.
/// Bytes not yet received are not held against it, so `[0x16]` alone is `true`; an empty slice is
/// `false`. A plain NATS client starts with `CONNECT`, `PING` and the like, never 0x16.
pub fn looks_like_tls(first_bytes: &[u8]) -> bool {
    match first_bytes {
        [] => false,
        [0x16] | [0x16, 0x03] => true,
        [0x16, 0x03, minor, ..] => *minor <= 0x04,
        _ => false,
    }
}

fn read_file(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsErrorKind> {
    std::fs::read(path).map_err(|source| TlsErrorKind::Unreadable {
        file,
        path: path.to_path_buf(),
        source,
    })
}

fn bad_pem(file: TlsFile, path: &Path, err: pem::Error) -> TlsErrorKind {
    TlsErrorKind::BadPem {
        file,
        path: path.to_path_buf(),
        detail: pem_detail(err),
    }
}

fn pem_detail(err: pem::Error) -> String {
    match err {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("missing \"{}\"", String::from_utf8_lossy(&end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("bad section start \"{}\"", String::from_utf8_lossy(&line))
        }
        pem::Error::Base64Decode(detail) => format!("bad base64: {detail}"),
        other => format!("{other:?}"),
    }
}

fn load_certs(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsErrorKind> {
    let bytes = read_file(file, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(file, path, e))?;
    if certs.is_empty() {
        return Err(TlsErrorKind::NoCertificate {
            file,
            path: path.to_path_buf(),
            found_key: PrivateKeyDer::from_pem_slice(&bytes).is_ok(),
        });
    }
    for cert in &certs {
        if let Err(e) = X509Certificate::from_der(cert) {
            return Err(TlsErrorKind::BadCertificate {
                file,
                path: path.to_path_buf(),
                detail: e.to_string(),
            });
        }
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsErrorKind> {
    let bytes = read_file(TlsFile::Key, path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(TlsErrorKind::NoPrivateKey {
            path: path.to_path_buf(),
            encrypted: contains(&bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
                || contains(&bytes, b"Proc-Type: 4,ENCRYPTED"),
        }),
        Err(e) => Err(bad_pem(TlsFile::Key, path, e)),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn certified_key(
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    tls: &Tls,
) -> Result<CertifiedKey, TlsErrorKind> {
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsErrorKind::BadPrivateKey {
                path: tls.key_file.clone(),
                detail: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // rustls cannot always tell (no public key for the signing key); the handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsErrorKind::KeyMismatch {
                cert: tls.cert_file.clone(),
                key: tls.key_file.clone(),
            })
        }
        Err(e) => Err(TlsErrorKind::BadCertificate {
            file: TlsFile::Cert,
            path: tls.cert_file.clone(),
            detail: e.to_string(),
        }),
    }
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsErrorKind> {
    let certs = load_certs(TlsFile::Ca, path)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsErrorKind::BadCertificate {
            file: TlsFile::Ca,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

// ---------------------------------------------------------------------------------------------
// Certificate names for verify_and_map.

/// The names a client certificate offers for exact matching against configured user names, in
/// the order nats-server tries them: every e-mail address of the subject alternative names, then
/// every DNS name, then every URI, then the subject written as Go's `pkix.Name` renders it:
/// RFC 2253 style, last RDN first, but built from the standard attributes only, in a fixed order
/// whatever the certificate's: `SERIALNUMBER`, `CN`, `OU`, `O`, `POSTALCODE`, `STREET`, `L`,
/// `ST`, `C`, several values of one type joined with `+` (`CN=alice,OU=a+OU=b,O=acme,C=US`),
/// and other attributes (`emailAddress`, `UID`, `DC`, ...) left out. Empty names are skipped.
/// A certificate that does not parse offers none.
///
/// A subject can also match a user name written as a distinguished name in another order; see
/// [`subject_matches`] and [`map_user`].
pub fn peer_identities(cert: &CertificateDer<'_>) -> Vec<String> {
    match X509Certificate::from_der(cert) {
        Ok((_, parsed)) => identities(&parsed),
        Err(_) => Vec::new(),
    }
}

/// Whether `configured` (a user name from the config), read as an RFC 4514 distinguished name,
/// names the same subject as the certificate: the same relative distinguished names, in any
/// order, attribute types compared without regard to case (`cn` = `CN`), values byte for byte
/// after unescaping (`\,`, `\2C`), spaces around names and values ignored. Only certificates
/// whose subject uses nothing but `C`, `ST`, `L`, `STREET`, `POSTALCODE`, `O`, `OU`, `CN`,
/// `SERIALNUMBER` and `DC` can match this way, as with nats-server; `#`-encoded values are not
/// understood. An empty subject matches nothing.
pub fn subject_matches(configured: &str, cert: &CertificateDer<'_>) -> bool {
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else {
        return false;
    };
    let Some(subject) = structural_dn(parsed.subject()) else {
        return false;
    };
    parse_dn(configured).is_some_and(|dn| same_rdns(&dn, &subject))
}

/// The user `verify_and_map` maps `cert` to among `users` (configured user names), the way
/// nats-server picks it: the first of [`peer_identities`] that is one of `users`; failing that,
/// the first of `users` that [`subject_matches`] the certificate.
pub fn map_user<'u, I>(cert: &CertificateDer<'_>, users: I) -> Option<&'u str>
where
    I: IntoIterator<Item = &'u str>,
{
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else {
        return None;
    };
    let users: Vec<&'u str> = users.into_iter().collect();
    for name in identities(&parsed) {
        if let Some(user) = users.iter().find(|u| **u == name) {
            return Some(user);
        }
    }
    let subject = structural_dn(parsed.subject())?;
    users
        .into_iter()
        .find(|u| parse_dn(u).is_some_and(|dn| same_rdns(&dn, &subject)))
}

fn identities(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut emails = Vec::new();
    let mut dns = Vec::new();
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::RFC822Name(s) => emails.push(s.to_string()),
                GeneralName::DNSName(s) => dns.push(s.to_string()),
                GeneralName::URI(s) => uris.push(s.to_string()),
                _ => {}
            }
        }
    }
    let mut names = emails;
    names.append(&mut dns);
    names.append(&mut uris);
    names.push(go_subject_string(cert.subject()));
    names.retain(|n| !n.is_empty());
    names
}

/// The standard attribute types, by OID, with the names both renderings use.
const ATTRIBUTE_NAMES: [(&str, &str); 10] = [
    ("2.5.4.6", "C"),
    ("2.5.4.8", "ST"),
    ("2.5.4.7", "L"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.17", "POSTALCODE"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.3", "CN"),
    ("2.5.4.5", "SERIALNUMBER"),
    ("0.9.2342.19200300.100.1.25", "DC"),
];

fn attribute_name(oid: &str) -> Option<&'static str> {
    ATTRIBUTE_NAMES
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, name)| *name)
}

/// An attribute value as text, for the string types certificates use.
fn attribute_text(value: &x509_parser::asn1_rs::Any<'_>) -> Option<String> {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::TeletexString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return None;
            }
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

/// The subject as Go's `pkix.Name.String()` of the parsed name's RDN sequence gives it.
fn go_subject_string(name: &X509Name<'_>) -> String {
    // Per type: its values in certificate order; CN and SERIALNUMBER keep only the last.
    let mut values: Vec<(&'static str, Vec<String>)> = ATTRIBUTE_NAMES[..9]
        .iter()
        .map(|(_, n)| (*n, Vec::new()))
        .collect();
    for rdn in name.iter() {
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            let Some(type_name) = attribute_name(&oid) else {
                continue;
            };
            let Some(slot) = values.iter_mut().find(|(n, _)| *n == type_name) else {
                continue; // DC: not one of the rendered fields
            };
            let Some(text) = attribute_text(attr.attr_value()) else {
                continue;
            };
            if matches!(type_name, "CN" | "SERIALNUMBER") {
                slot.1.clear();
                if text.is_empty() {
                    continue; // an empty CN or serial number is not rendered
                }
            }
            slot.1.push(text);
        }
    }
    let mut out = String::new();
    for (type_name, vals) in values.iter().rev().filter(|(_, v)| !v.is_empty()) {
        if !out.is_empty() {
            out.push(',');
        }
        for (i, v) in vals.iter().enumerate() {
            if i > 0 {
                out.push('+');
            }
            out.push_str(type_name);
            out.push('=');
            escape_value(v, &mut out);
        }
    }
    out
}

/// RFC 2253 escaping as Go applies it: `,+"\<>;` always, a space first or last, `#` first.
fn escape_value(value: &str, out: &mut String) {
    let last = value.len().saturating_sub(1);
    for (i, c) in value.char_indices() {
        let escape = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => i == 0 || i == last,
            '#' => i == 0,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
}

/// One attribute of a distinguished name: its type (as written or as the table names it) and
/// its value.
type Attr = (String, String);
/// A relative distinguished name: one or more attributes.
type Rdn = Vec<Attr>;

/// The subject as RDNs with named types, or `None` if it uses a type outside the table or a
/// value that is not a string, or is empty.
fn structural_dn(name: &X509Name<'_>) -> Option<Vec<Rdn>> {
    let mut rdns = Vec::new();
    for rdn in name.iter() {
        let mut attrs = Vec::new();
        for attr in rdn.iter() {
            let type_name = attribute_name(&attr.attr_type().to_id_string())?;
            let text = attribute_text(attr.attr_value())?;
            attrs.push((type_name.to_owned(), text));
        }
        rdns.push(attrs);
    }
    (!rdns.is_empty()).then_some(rdns)
}

/// Reads an RFC 4514 distinguished name (`CN=alice,OU=dev+UID=7,O=acme\, inc.`). Spaces before
/// a type or value and unescaped spaces after one are dropped; `\` escapes a special character
/// or gives a byte in hex. A trailing `,` is tolerated. `None` if it is not a DN (no `=`, an
/// empty type, a `#`-encoded value, a bad escape, a second `=` in a value).
fn parse_dn(text: &str) -> Option<Vec<Rdn>> {
    let bytes = text.as_bytes();
    let mut rdns: Vec<Rdn> = Vec::new();
    let mut rdn: Rdn = Vec::new();
    let mut attr_type: Option<String> = None;
    let mut buf: Vec<u8> = Vec::new();
    // Unescaped spaces at the end of `buf`, dropped when it is taken.
    let mut trailing = 0usize;

    fn take(buf: &mut Vec<u8>, trailing: &mut usize) -> Option<String> {
        buf.truncate(buf.len() - *trailing);
        *trailing = 0;
        String::from_utf8(std::mem::take(buf)).ok()
    }

    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\\' => {
                let next = *bytes.get(i + 1)?;
                if b" \"#+,;<=>\\".contains(&next) {
                    buf.push(next);
                    i += 2;
                } else {
                    let hex = bytes.get(i + 1..i + 3)?;
                    let hex = std::str::from_utf8(hex).ok()?;
                    buf.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 3;
                }
                trailing = 0;
                continue;
            }
            b'=' => {
                if attr_type.is_some() {
                    return None;
                }
                let t = take(&mut buf, &mut trailing)?;
                if t.is_empty() {
                    return None;
                }
                attr_type = Some(t);
                // Skip spaces before the value, then refuse BER (`#...`) values.
                let mut j = i + 1;
                while bytes.get(j) == Some(&b' ') {
                    j += 1;
                }
                if bytes.get(j) == Some(&b'#') {
                    return None;
                }
            }
            b',' | b'+' => {
                let t = attr_type.take()?;
                let v = take(&mut buf, &mut trailing)?;
                rdn.push((t, v));
                if c == b',' {
                    rdns.push(std::mem::take(&mut rdn));
                }
            }
            b' ' if buf.is_empty() => {}
            _ => {
                if c == b' ' {
                    trailing += 1;
                } else {
                    trailing = 0;
                }
                buf.push(c);
            }
        }
        i += 1;
    }
    match attr_type.take() {
        Some(t) => {
            let v = take(&mut buf, &mut trailing)?;
            rdn.push((t, v));
            rdns.push(rdn);
        }
        None if !buf.is_empty() || !rdn.is_empty() => return None,
        None => {}
    }
    (!rdns.is_empty()).then_some(rdns)
}

/// Two attributes are the same: type without regard to ASCII case, value exactly.
fn same_attr(a: &Attr, b: &Attr) -> bool {
    a.0.eq_ignore_ascii_case(&b.0) && a.1 == b.1
}

/// Two RDNs are the same: as many attributes, each of one found in the other.
fn same_rdn(a: &Rdn, b: &Rdn) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| b.iter().any(|y| same_attr(x, y)))
        && b.iter().all(|y| a.iter().any(|x| same_attr(x, y)))
}

/// Two DNs hold the same RDNs, in any order, each counted as often as it occurs.
fn same_rdns(a: &[Rdn], b: &[Rdn]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut used = vec![false; b.len()];
    a.iter().all(|x| {
        let found = b
            .iter()
            .enumerate()
            .find(|(j, y)| !used[*j] && same_rdn(x, y))
            .map(|(j, _)| j);
        match found {
            Some(j) => {
                used[j] = true;
                true
            }
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "natter-tls-{}-{}-{}",
                std::process::id(),
                name,
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM
    /// files, plus the client certificate's DER.
    struct Pki {
        dir: TempDir,
        ca: PathBuf,
        server_cert: PathBuf,
        server_key: PathBuf,
        client_cert: PathBuf,
        client_key: PathBuf,
        client_der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca_params() -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "natter test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
    }

    /// A client certificate: subject C=US, O=acme, OU=dev, CN=alice (in that ASN.1 order),
    /// e-mail, DNS and URI names.
    fn client_params() -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "US");
        dn.push(DnType::OrganizationName, "acme");
        dn.push(DnType::OrganizationalUnitName, "dev");
        dn.push(DnType::CommonName, "alice");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::DnsName("alice.example.com".try_into().unwrap()),
            SanType::Rfc822Name("alice@example.com".try_into().unwrap()),
            SanType::URI("nats://alice".try_into().unwrap()),
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
    }

    fn issue(
        issuer: &Issuer<'static, KeyPair>,
        params: CertificateParams,
    ) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert, key)
    }

    fn pki(name: &str) -> Pki {
        let dir = TempDir::new(name);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params().self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params(), ca_key);

        let mut server =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (server_cert, server_key) = issue(&issuer, server);
        let (client_cert, client_key) = issue(&issuer, client_params());

        Pki {
            ca: dir.write("ca.pem", &ca_cert.pem()),
            server_cert: dir.write("server.pem", &server_cert.pem()),
            server_key: dir.write("server-key.pem", &server_key.serialize_pem()),
            client_cert: dir.write("client.pem", &client_cert.pem()),
            client_key: dir.write("client-key.pem", &client_key.serialize_pem()),
            client_der: client_cert.der().clone(),
            issuer,
            dir,
        }
    }

    fn tls(pki: &Pki) -> Tls {
        Tls {
            cert_file: pki.server_cert.clone(),
            key_file: pki.server_key.clone(),
            ca_file: Some(pki.ca.clone()),
            verify: false,
            verify_and_map: false,
            timeout: Duration::from_secs(2),
            handshake_first: false,
            handshake_first_fallback: None,
            pos: None,
        }
    }

    fn error_text(tls: &Tls) -> String {
        server_config(tls)
            .expect_err("config should fail")
            .to_string()
    }

    #[test]
    fn config_loads_with_and_without_verify() {
        let pki = pki("loads");
        let mut t = tls(&pki);
        server_config(&t).unwrap();
        t.verify = true;
        server_config(&t).unwrap();
        t.verify = false;
        t.verify_and_map = true;
        server_config(&t).unwrap();
        t.ca_file = None;
        t.verify_and_map = false;
        server_config(&t).unwrap();
    }

    #[test]
    fn missing_file_is_named() {
        let pki = pki("missing");
        let mut t = tls(&pki);
        t.cert_file = pki.dir.0.join("nope.pem");
        let text = error_text(&t);
        assert!(text.starts_with("tls cert_file \""), "{text}");
        assert!(text.contains("nope.pem\": cannot read it:"), "{text}");

        let mut t = tls(&pki);
        t.ca_file = Some(pki.dir.0.join("no-ca.pem"));
        let text = error_text(&t);
        assert!(
            text.contains("tls ca_file \"") && text.contains("no-ca.pem"),
            "{text}"
        );

        let mut t = tls(&pki);
        t.key_file = pki.dir.0.join("no-key.pem");
        assert!(error_text(&t).contains("tls key_file \""));
    }

    #[test]
    fn position_prefixes_the_message() {
        let pki = pki("pos");
        let mut t = tls(&pki);
        t.key_file = pki.dir.0.join("nope.pem");
        t.pos = Some(Pos {
            file: Arc::from(Path::new("server.conf")),
            line: 3,
            col: 1,
        });
        let err = server_config(&t).unwrap_err();
        assert!(
            err.to_string().starts_with("server.conf:3:1: tls key_file"),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn file_without_certificate() {
        let pki = pki("nocert");
        let mut t = tls(&pki);
        t.cert_file = pki.dir.write("empty.pem", "just some text\n");
        let text = error_text(&t);
        assert!(text.contains("empty.pem\": no certificate in it"), "{text}");
        assert!(!text.contains("swapped"), "{text}");

        // The key given as the certificate: say so.
        t.cert_file = pki.server_key.clone();
        let text = error_text(&t);
        assert!(text.contains("no certificate in it"), "{text}");
        assert!(
            text.contains("are cert_file and key_file swapped?"),
            "{text}"
        );

        // A CA file without certificates.
        let mut t = tls(&pki);
        t.ca_file = Some(pki.server_key.clone());
        let text = error_text(&t);
        assert!(text.starts_with("tls ca_file \""), "{text}");
        assert!(text.contains("no certificate in it"), "{text}");
    }

    #[test]
    fn file_without_key() {
        let pki = pki("nokey");
        let mut t = tls(&pki);
        t.key_file = pki.server_cert.clone();
        let text = error_text(&t);
        assert!(text.starts_with("tls key_file \""), "{text}");
        assert!(
            text.contains("server.pem\": no private key in it"),
            "{text}"
        );

        t.key_file = pki.dir.write(
            "enc.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        assert!(error_text(&t).contains("the private key is encrypted"));
    }

    #[test]
    fn malformed_pem() {
        let pki = pki("badpem");
        let mut t = tls(&pki);
        t.cert_file = pki.dir.write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n", // no END line
        );
        let text = error_text(&t);
        assert!(text.contains("broken.pem\": malformed PEM"), "{text}");

        t.cert_file = pki.dir.write(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
        );
        let text = error_text(&t);
        assert!(
            text.contains("garbage.pem\": invalid certificate"),
            "{text}"
        );
    }

    #[test]
    fn key_not_matching_certificate() {
        let pki = pki("mismatch");
        let mut t = tls(&pki);
        t.key_file = pki.client_key.clone();
        let text = error_text(&t);
        assert_eq!(
            text,
            format!(
                "tls key_file \"{}\": private key does not match the certificate in cert_file \
                 \"{}\"",
                pki.client_key.display(),
                pki.server_cert.display()
            )
        );
    }

    #[test]
    fn verify_needs_ca_file() {
        let pki = pki("noca");
        let mut t = tls(&pki);
        t.ca_file = None;
        t.verify = true;
        assert!(error_text(&t).contains("require ca_file"));
        t.verify = false;
        t.verify_and_map = true;
        assert!(error_text(&t).contains("require ca_file"));
    }

    // An RSA key in PKCS#1 form and a P-256 key in SEC1 form, each with a self-signed
    // certificate for localhost (valid until 2126), made with openssl.
    const RSA_PKCS1_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEArcqt376auVQ0BUo8JwM/iA/o8PNdzkgKh2YP9lo/MgjCdJ+F
v3r+FtD0kzL/cdlAsIsm4JvwyQ+BE3+Nw414V7mqPrQe8eQ3rEwT8kiQRmIne2gr
37jwZa5VZfZEUk+s9yam+K4imG+a+XHJLN9EU/IM9KNlvIt+lw7CcbE8OFmNiN0d
77vBfXkYzuZvs8hdrGTzRPLRzt8m3jlBjiB1FdXcT0VaQRbxrnqI/Sm8PhauXxMQ
CddrjdDVnETHJbpxGTxBtopTYXlqhZbhK/1kgAXeu5KPfOnWZePAKdoCGyu6Ekg5
Xe8mwe2Fa869U+xtgXfAX0uPPkDrv0i4ALsHdQIDAQABAoIBAAyU3jaS/W+KTYPO
hoFKhmhqwnHjJHjhFUYNGP28NdQA91brD4s3s7piITqg2AZddIXzZPqgv3NG2JDZ
TKGKFdq/+be1YYIgg/lIvq7tGujFhVc1SOvW3yx1TQBnLjYJR5vS5Aaf0KhZeA4z
8xz5AuDS5qY1SBG4xY7ZBjGl45auokcapkuiczptIFlfzbCvbCx7NJCdcpVsQvdO
H6QmQBMGqNbAAVQmYIidFKr4ymBP9orJY9os+iMclCCfeFemtX5s3nGQOHlPj30+
7vMxU2r2A7Y6Rzkg+TsmzfuuoKrSYZXeJXUOJRdstnHzXoxkptYZbDR3PcJoJpyG
o7i/UicCgYEA7JGFpIggXUX7sJUdayL/r98DhH6RMpC+aC70BDUYeGVBKHCFngEf
QvHf3z/sQbY4hsID699hKzXkfeayyrPoUCt/buFxqowrkuRAW2nLyPJIcvUWMhNC
RlOoJCjIe2duhOKo48MvzDy27Q+kwaXRBicMHDjsRMUjbHvlARpr5DcCgYEAvBEc
NSkVlcGTAIwB/kDQL8NumIVBGiMhc8nW7VCDBkCUfnv9G4DCTxkbjThRnOVbemyi
3l5gwm3z/dwQP3PzCOIr0hSmKQirY08VmfVwMSlbLryVzvGW0Q5Rq63w/4PZdZj2
G2aXohdCT5cDrG4FpYZ9UqBmPT7fjaIf9TMIs7MCgYEAug7Z5UWK7tET2xXsRU8J
efEUeyhwWiytFJOZJ5X64PYCASQ+cr6/L4+8W4GS9zuxyYreOq09ZxbD1qGTDQni
NOuBFlwJYfFMdANA+qSCulCT2pYYFto+zcEOBSJuS2BV8/2whzIEbcVyuZAMLKGV
fBlJ1QiQCqZh7fija/Kz2JECgYB21NDf/j+3SoLaO50ezFE/fNsq4DgMjdobUZPO
i6rejnvFmA6MDEW6uQChsM5QttOgfXhDzZqR/+vFogFaNqeAG3jY21dKYkH5FAVw
LJdhWOJWm66E/j3vhn6wXc4DhYooNih7k82IC+5IYAFgOHy05E/Xn6Y6WLnkwmYz
BrYe5QKBgQCDdAl2/5ZwcInjOs3plurhiOiijp57H9XqLdvjzt39U36ecsZHUoi9
svZI3eAqEJp/1pbL3jUCLk7VXgW3bf/WvILmih+jptWXW4cVwtcjsoPz0MEL71u8
IJnrnPQuPu+mAEtcT6JEKnb65lACnnbq68tJ5QAxxAVGLsMy8V4+7w==
-----END RSA PRIVATE KEY-----
";
    const RSA_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIDITCCAgmgAwIBAgIUEwhduYxQ03hD5dOZ0UAroIgEKMAwDQYJKoZIhvcNAQEL
BQAwFDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjA0MjcxMFoYDzIxMjYx
MDI5MDQyNzEwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwggEiMA0GCSqGSIb3DQEB
AQUAA4IBDwAwggEKAoIBAQCtyq3fvpq5VDQFSjwnAz+ID+jw813OSAqHZg/2Wj8y
CMJ0n4W/ev4W0PSTMv9x2UCwiybgm/DJD4ETf43DjXhXuao+tB7x5DesTBPySJBG
Yid7aCvfuPBlrlVl9kRST6z3Jqb4riKYb5r5ccks30RT8gz0o2W8i36XDsJxsTw4
WY2I3R3vu8F9eRjO5m+zyF2sZPNE8tHO3ybeOUGOIHUV1dxPRVpBFvGueoj9Kbw+
Fq5fExAJ12uN0NWcRMclunEZPEG2ilNheWqFluEr/WSABd67ko986dZl48Ap2gIb
K7oSSDld7ybB7YVrzr1T7G2Bd8BfS48+QOu/SLgAuwd1AgMBAAGjaTBnMB0GA1Ud
DgQWBBQaWAPrAU/hwLQLvjrHJbPPHoTq9DAfBgNVHSMEGDAWgBQaWAPrAU/hwLQL
vjrHJbPPHoTq9DAPBgNVHRMBAf8EBTADAQH/MBQGA1UdEQQNMAuCCWxvY2FsaG9z
dDANBgkqhkiG9w0BAQsFAAOCAQEAAbzBzDh5PWZAZqS7bN1Pss9gHb38cSgkPY5d
zJanCpnIAmI/7c3gwduCqtu+whuUWcCkCMJARARasNzMfvXR8c6Ah7T+IejfXqs2
wZo128xRZ4cVFqP48xl8wD/XwFTraDfMdy1oY4TRTYqPVbHAqruxw9iS2/Frd2s+
k2xX+h0HeChjAksaG0I45L//WEuMJ9iQ8fpTJ13FioGDgs4ILjExHAvcvyCW1VR+
docrvyfG5b1ytSvnTn66Q3W20kZwuQvQDwFVfUmNZ69APY9QDAALPsIlZVjIcYFA
sQMn5724gX+s/NsqYrl1xy95FjK+vW0VxTe4irpwUOBylhC0iQ==
-----END CERTIFICATE-----
";
    const EC_SEC1_KEY: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEINbP+run4fQfROnon2v65F3p6JPBdZRIa5VQWKx4md9moAoGCCqGSM49
AwEHoUQDQgAErsNO06fMe8NVXLTnJdfOC0oBzVSAZfA8nCQDeb5Pw2yFH4Zx4Yqv
A/sqjWlgCCooPYoEezueMYo3Sj/ieovz3Q==
-----END EC PRIVATE KEY-----
";
    const EC_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBlTCCATugAwIBAgIUO/vBTMv5mAFroZIyoe13ebeN+1cwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjA0MjcxMFoYDzIxMjYxMDI5
MDQyNzEwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASuw07Tp8x7w1VctOcl184LSgHNVIBl8DycJAN5vk/DbIUfhnHhiq8D
+yqNaWAIKig9igR7O54xijdKP+J6i/Pdo2kwZzAdBgNVHQ4EFgQUQmeNxlhvmZ+z
y+AtDVKzcqCwv5owHwYDVR0jBBgwFoAUQmeNxlhvmZ+zy+AtDVKzcqCwv5owDwYD
VR0TAQH/BAUwAwEB/zAUBgNVHREEDTALgglsb2NhbGhvc3QwCgYIKoZIzj0EAwID
SAAwRQIhAOICtv1bc731uJN5YwRehhkjD2qoPf9eKPmJProt7tkNAiAzw5AhB68R
iVZJPCqLhHvHAu2yWKIImIoirmtqj88MZQ==
-----END CERTIFICATE-----
";

    #[test]
    fn pkcs1_and_sec1_keys_load() {
        let pki = pki("keyforms");
        let mut t = tls(&pki);
        t.cert_file = pki.dir.write("rsa.pem", RSA_CERT);
        t.key_file = pki.dir.write("rsa-key.pem", RSA_PKCS1_KEY);
        server_config(&t).unwrap();
        t.cert_file = pki.dir.write("ec.pem", EC_CERT);
        t.key_file = pki.dir.write("ec-key.pem", EC_SEC1_KEY);
        server_config(&t).unwrap();
        // And crossed over, they do not match.
        t.key_file = pki.dir.0.join("rsa-key.pem");
        assert!(error_text(&t).contains("does not match"));
    }

    #[test]
    fn identities_in_nats_server_order() {
        let pki = pki("ids");
        assert_eq!(
            peer_identities(&pki.client_der),
            vec![
                "alice@example.com".to_string(),
                "alice.example.com".to_string(),
                "nats://alice".to_string(),
                "CN=alice,OU=dev,O=acme,C=US".to_string(),
            ]
        );
        assert!(peer_identities(&CertificateDer::from(vec![1, 2, 3])).is_empty());
    }

    #[test]
    fn subject_rendering_follows_go() {
        let pki = pki("render");
        // Types in a fixed order whatever the certificate's; repeated OUs joined with '+';
        // unknown attributes (emailAddress) and DC left out; escaping of special characters.
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "bob");
        dn.push(
            DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
            "com",
        );
        dn.push(DnType::OrganizationalUnitName, "a");
        dn.push(DnType::OrganizationName, "acme, inc.");
        dn.push(DnType::StateOrProvinceName, " CA");
        dn.push(DnType::LocalityName, "#1<2>;\"x\\");
        dn.push(
            DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            DnValue::Ia5String("bob@example.com".try_into().unwrap()),
        );
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), "42");
        dn.push(DnType::CountryName, "US");
        params.distinguished_name = dn;
        let (cert, _) = issue(&pki.issuer, params);
        assert_eq!(
            peer_identities(cert.der()),
            vec!["SERIALNUMBER=42,CN=bob,OU=a,O=acme\\, inc.,L=\\#1\\<2\\>\\;\\\"x\\\\,ST=\\ CA,C=US"
                .to_string()]
        );
    }

    #[test]
    fn multiple_values_of_one_type() {
        let pki = pki("multi");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "US");
        dn.push(DnType::OrganizationalUnitName, "a");
        // rcgen keeps one value per DnType; the OU's OID as a custom type makes a second OU.
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 11]), "b");
        dn.push(DnType::CommonName, "frank");
        params.distinguished_name = dn;
        let (cert, _) = issue(&pki.issuer, params);
        // Rendered as Go does: both OUs in one '+'-joined RDN.
        assert_eq!(
            peer_identities(cert.der()),
            vec!["CN=frank,OU=a+OU=b,C=US".to_string()]
        );
        // Matched structurally as the certificate has them: separate RDNs, any order.
        assert!(subject_matches("OU=b,CN=frank,C=US,OU=a", cert.der()));
        assert!(!subject_matches("CN=frank,OU=b+OU=a,C=US", cert.der()));
        assert_eq!(
            map_user(cert.der(), ["CN=frank,OU=a+OU=b,C=US"]),
            Some("CN=frank,OU=a+OU=b,C=US")
        );
        // Multi-valued RDNs (which rcgen cannot write) on the matcher directly.
        let frank = parse_dn("CN=frank,OU=b,OU=a,C=US").unwrap();
        assert!(same_rdns(
            &parse_dn("C=US,OU=a,OU=b,CN=frank").unwrap(),
            &frank
        ));
        assert!(!same_rdns(
            &parse_dn("C=US,OU=a,OU=a,CN=frank").unwrap(),
            &frank
        ));
        assert!(!same_rdns(
            &parse_dn("C=US,OU=a+OU=b,CN=frank").unwrap(),
            &frank
        ));
        let grace = parse_dn("CN=grace+OU=dev,O=acme").unwrap();
        assert!(same_rdns(
            &parse_dn("O=acme,OU=dev+CN=grace").unwrap(),
            &grace
        ));
        assert!(!same_rdns(
            &parse_dn("O=acme,OU=dev,CN=grace").unwrap(),
            &grace
        ));
    }

    #[test]
    fn dn_parsing() {
        let attrs = |s: &str| parse_dn(s);
        let one = |t: &str, v: &str| vec![(t.to_string(), v.to_string())];
        assert_eq!(
            attrs(" CN = bob , O=acme\\, inc.,L=\\ x\\ ,").unwrap(),
            vec![one("CN", "bob"), one("O", "acme, inc."), one("L", " x ")]
        );
        assert_eq!(attrs("CN=b\\6Fb").unwrap(), vec![one("CN", "bob")]);
        assert_eq!(
            attrs("CN=a+OU=b").unwrap(),
            vec![vec![("CN".into(), "a".into()), ("OU".into(), "b".into())]]
        );
        for bad in [
            "", "alice", ",CN=a", "CN=#0403", "=a", "CN=a=b", "CN=a\\", "CN=a\\zz",
        ] {
            assert_eq!(attrs(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn subject_matching_in_any_order() {
        let pki = pki("match");
        let cert = &pki.client_der;
        for yes in [
            "CN=alice,OU=dev,O=acme,C=US",
            "C=US,O=acme,OU=dev,CN=alice",
            "O=acme,CN=alice,OU=dev,C=US",
            "cn=alice, ou=dev, o=acme, c=US",
            "CN = alice,OU=dev,O=acme,C=US,",
        ] {
            assert!(subject_matches(yes, cert), "{yes}");
        }
        for no in [
            "CN=ALICE,OU=dev,O=acme,C=US",
            "CN=alice,OU=dev,O=acme",
            "CN=alice,OU=dev,O=acme,C=US,C=US",
            "CN=alice+OU=dev,O=acme,C=US",
            "CN=alice;OU=dev;O=acme;C=US",
            "2.5.4.3=alice,OU=dev,O=acme,C=US",
            "alice",
        ] {
            assert!(!subject_matches(no, cert), "{no}");
        }

        // A subject with an attribute outside the table cannot match out of order (nor in it).
        let mut params = client_params();
        params.distinguished_name.push(
            DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            DnValue::Ia5String("alice@example.com".try_into().unwrap()),
        );
        let (odd, _) = issue(&pki.issuer, params);
        assert!(!subject_matches("CN=alice,OU=dev,O=acme,C=US", odd.der()));
        assert_eq!(
            map_user(odd.der(), ["CN=alice,OU=dev,O=acme,C=US"]),
            Some("CN=alice,OU=dev,O=acme,C=US")
        );
        assert_eq!(map_user(odd.der(), ["C=US,O=acme,OU=dev,CN=alice"]), None);
    }

    #[test]
    fn mapping_order() {
        let pki = pki("order");
        let cert = &pki.client_der;
        let dn = "CN=alice,OU=dev,O=acme,C=US";
        let reordered = "C=US,O=acme,OU=dev,CN=alice";
        let all = [
            reordered,
            dn,
            "nats://alice",
            "alice.example.com",
            "alice@example.com",
        ];
        assert_eq!(map_user(cert, all), Some("alice@example.com"));
        assert_eq!(
            map_user(cert, all[..4].iter().copied()),
            Some("alice.example.com")
        );
        assert_eq!(
            map_user(cert, all[..3].iter().copied()),
            Some("nats://alice")
        );
        assert_eq!(map_user(cert, all[..2].iter().copied()), Some(dn));
        assert_eq!(map_user(cert, [reordered]), Some(reordered));
        assert_eq!(map_user(cert, ["127.0.0.1", "alice", "CN=alice"]), None);
        let names = ["bob".to_string(), "alice@example.com".to_string()];
        assert_eq!(
            map_user(cert, names.iter().map(String::as_str)),
            Some("alice@example.com")
        );
    }

    #[test]
    fn tls_record_detection() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(looks_like_tls(&[0x16, 0x03, 0x03]));
        assert!(looks_like_tls(&[0x16]));
        assert!(!looks_like_tls(b""));
        assert!(!looks_like_tls(b"CONNECT {}\r\n"));
        assert!(!looks_like_tls(b"PING\r\n"));
        assert!(!looks_like_tls(&[0x16, 0x02, 0x00]));
        assert!(!looks_like_tls(&[0x16, 0x03, 0x05]));
        assert!(!looks_like_tls(&[0x80, 0x2e, 0x01])); // SSLv2-style hello
    }

    fn client_config(pki: &Pki, with_cert: bool) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_cert {
            let chain = CertificateDer::pem_file_iter(&pki.client_cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&pki.client_key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }

    /// Runs one handshake over loopback TCP. Returns the server's result (the peer certificate
    /// it saw, if any) and what the client read (the server writes "hello" once accepted).
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> (
        Result<Option<CertificateDer<'static>>, io::Error>,
        io::Result<Vec<u8>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = acceptor(server);
        let server_side = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut stream = accept.accept(tcp).await?;
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned());
            stream.write_all(b"hello").await?;
            stream.shutdown().await?;
            Ok::<_, io::Error>(peer)
        });
        let client_side = async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut stream = tokio_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await?;
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await?;
            Ok::<_, io::Error>(got)
        };
        let client_result = tokio::time::timeout(Duration::from_secs(10), client_side)
            .await
            .expect("client timed out");
        let server_result = tokio::time::timeout(Duration::from_secs(10), server_side)
            .await
            .expect("server timed out")
            .unwrap();
        (server_result, client_result)
    }

    #[tokio::test]
    async fn handshake_without_client_auth() {
        let pki = pki("e2e-plain");
        let server = server_config(&tls(&pki)).unwrap();
        let (server_result, client_result) = handshake(server, client_config(&pki, false)).await;
        assert_eq!(server_result.unwrap(), None);
        assert_eq!(client_result.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn handshake_with_verify() {
        let pki = pki("e2e-verify");
        let mut t = tls(&pki);
        t.verify = true;
        let server = server_config(&t).unwrap();

        // Without a client certificate the server refuses the handshake; the client fails in
        // its handshake (TLS 1.2) or on its first read (TLS 1.3).
        let (server_result, client_result) =
            handshake(server.clone(), client_config(&pki, false)).await;
        let err = server_result.unwrap_err();
        assert!(err.to_string().contains("no certificates"), "{err}");
        assert!(client_result.is_err(), "{client_result:?}");

        // With one, it completes and the server sees the certificate, which maps.
        let (server_result, client_result) = handshake(server, client_config(&pki, true)).await;
        let peer = server_result.unwrap().expect("a peer certificate");
        assert_eq!(client_result.unwrap(), b"hello");
        assert_eq!(peer, pki.client_der);
        assert_eq!(
            map_user(&peer, ["alice@example.com"]),
            Some("alice@example.com")
        );
    }

    #[tokio::test]
    async fn handshake_with_untrusted_client_certificate() {
        let pki = pki("e2e-untrusted");
        let other = pki_other_ca(&pki);
        let mut t = tls(&pki);
        t.verify_and_map = true;
        t.ca_file = Some(other);
        let server = server_config(&t).unwrap();
        let (server_result, client_result) = handshake(server, client_config(&pki, true)).await;
        assert!(server_result.is_err());
        assert!(client_result.is_err());
    }

    /// A CA file for an unrelated CA, in the same directory.
    fn pki_other_ca(pki: &Pki) -> PathBuf {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params().self_signed(&key).unwrap();
        pki.dir.write("other-ca.pem", &cert.pem())
    }
}
