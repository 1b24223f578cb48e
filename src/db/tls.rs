//! TLS with rustls, following libpq's `sslmode`: `disable`, `prefer` and
//! `require` encrypt when they can without checking the server's
//! certificate (as libpq does when no root certificate is given);
//! `verify-ca` checks the chain; `verify-full` checks the chain and the
//! host name. Roots come from `sslrootcert` (PEM), else the system's.

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" | "allow" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => bail!("sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"),
        })
    }

    /// What tokio-postgres negotiates; verification is rustls's business.
    pub fn wire(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// The connector for a mode and an optional root certificate file.
pub fn connector(mode: SslMode, root_cert: Option<&str>) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?;
    let config = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(roots(root_cert)?);
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .context("cannot set up certificate verification")?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verification {
                    inner: webpki,
                    check_name: mode == SslMode::VerifyFull,
                }))
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn roots(root_cert: Option<&str>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match root_cert {
        Some(path) if path != "system" => {
            let pem = std::fs::read(path).with_context(|| format!("cannot read the root certificate {path}"))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                store.add(cert.with_context(|| format!("{path} is not a PEM certificate file"))?)?;
            }
            if store.is_empty() {
                bail!("{path} holds no certificate");
            }
        }
        _ => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(cert);
            }
        }
    }
    Ok(store)
}

/// libpq's `require`: encrypted, the certificate not checked.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` and `verify-full`: the chain always, the name for full.
#[derive(Debug)]
struct Verification {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verification {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)) if !self.check_name => {
                Ok(ServerCertVerified::assertion())
            }
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { .. }))
                if !self.check_name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL or
/// key=value), since tokio-postgres knows fewer modes than libpq. The rest
/// is handed back for tokio-postgres, meaning what it meant.
pub fn split_ssl(conn: &str) -> Result<(String, Option<String>, Option<String>)> {
    if ["postgres://", "postgresql://"].iter().any(|p| conn.starts_with(p)) {
        Ok(split_ssl_url(conn))
    } else {
        split_ssl_keywords(conn)
    }
}

/// The query of a URL is what follows its first `?`, as libpq reads it:
/// the whole URL cannot go through `url::Url`, which refuses libpq's
/// `host1:5432,host2:5433` lists and would take a `#` for a fragment.
fn split_ssl_url(conn: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = conn.split_once('?') else {
        return (conn.to_string(), None, None);
    };
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for raw in query.split('&') {
        // libpq decodes `%XX` only; a `+` stays a plus sign, not a space.
        let escaped = raw.replace('+', "%2B");
        let pair = url::form_urlencoded::parse(escaped.as_bytes()).next();
        match pair.as_ref().map(|(k, v)| (k.as_ref(), v)) {
            Some(("sslmode", v)) => mode = Some(v.to_string()),
            Some(("sslrootcert", v)) => root = Some(v.to_string()),
            _ if raw.is_empty() => {}
            _ => kept.push(raw),
        }
    }
    let rest = match kept.is_empty() {
        true => base.to_string(),
        false => format!("{base}?{}", kept.join("&")),
    };
    (rest, mode, root)
}

/// key=value settings as libpq parses them: blanks around `=`, values in
/// single quotes where they hold blanks, a backslash taking the next
/// character literally, quoted or not.
fn split_ssl_keywords(conn: &str) -> Result<(String, Option<String>, Option<String>)> {
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for (key, value) in parse_keywords(conn)? {
        match key {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(value),
            _ => kept.push(format!("{key}='{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))),
        }
    }
    Ok((kept.join(" "), mode, root))
}

/// The `key=value` pairs of a libpq connection string. Errors name the
/// position, never a value, which may be a password.
fn parse_keywords(conn: &str) -> Result<Vec<(&str, String)>> {
    let mut out = Vec::new();
    let mut it = conn.char_indices().peekable();
    loop {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = it.peek() else {
            return Ok(out);
        };
        let mut end = conn.len();
        while let Some(&(i, c)) = it.peek() {
            if c.is_whitespace() || c == '=' {
                end = i;
                break;
            }
            it.next();
        }
        let key = &conn[start..end];
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if it.next_if(|(_, c)| *c == '=').is_none() {
            bail!(
                "the connection string is not valid: the keyword at character {} has no `=` after it",
                conn[..start].chars().count() + 1
            );
        }
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match it.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => value.extend(it.next().map(|(_, c)| c)),
                    Some((_, c)) => value.push(c),
                    None => bail!("the connection string is not valid: the value of {key} has no closing quote"),
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace()) {
                match c {
                    '\\' => value.extend(it.next().map(|(_, c)| c)),
                    c => value.push(c),
                }
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_settings_leave_the_connection_string() {
        let (rest, mode, root) =
            split_ssl("postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem")
                .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/tmp/ca.pem"));
        let (rest, mode, root) = split_ssl("host=h sslmode=require dbname=d").unwrap();
        assert_eq!(rest, "host='h' dbname='d'");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root, None);
        assert!(SslMode::parse("verify-everything").is_err());
    }

    #[test]
    fn url_query_values_are_percent_decoded() {
        let (rest, mode, root) =
            split_ssl("postgresql://u:p%40ss@h1:5432,h2:5433/db?sslrootcert=%2Fa%20b%2Fca%25.pem&sslmode=verify-ca")
                .unwrap();
        assert_eq!(rest, "postgresql://u:p%40ss@h1:5432,h2:5433/db");
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root.as_deref(), Some("/a b/ca%.pem"));
        // As in libpq, a plus sign is itself and an unencoded slash is fine.
        let (_, _, root) = split_ssl("postgres://h/db?sslrootcert=/certs/a+b.pem").unwrap();
        assert_eq!(root.as_deref(), Some("/certs/a+b.pem"));
        // Other parameters reach tokio-postgres exactly as written.
        let url = "postgres://h/db?application_name=a%20b&sslmode=require&options=-c%20work_mem%3D64MB";
        let (rest, _, _) = split_ssl(url).unwrap();
        assert_eq!(
            rest,
            "postgres://h/db?application_name=a%20b&options=-c%20work_mem%3D64MB"
        );
        let cfg: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(cfg.get_application_name(), Some("a b"));
        assert_eq!(cfg.get_options(), Some("-c work_mem=64MB"));
        let (rest, mode, root) = split_ssl("postgres://h/db").unwrap();
        assert_eq!((rest.as_str(), mode, root), ("postgres://h/db", None, None));
    }

    #[test]
    fn keyword_values_follow_libpq_quoting() {
        let (rest, mode, root) =
            split_ssl("host=h sslrootcert='/a b/ca.pem' sslmode = 'verify-full' options='-c work_mem=64MB' dbname=d")
                .unwrap();
        assert_eq!(root.as_deref(), Some("/a b/ca.pem"));
        assert_eq!(mode.as_deref(), Some("verify-full"));
        let cfg: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(cfg.get_options(), Some("-c work_mem=64MB"));
        assert_eq!(cfg.get_dbname(), Some("d"));
        // Backslashes escape in and out of quotes; percent signs are literal.
        let (rest, _, root) = split_ssl(r"sslrootcert=/a\ b/it\'s.pem password='p\'w\\d x'").unwrap();
        assert_eq!(root.as_deref(), Some("/a b/it's.pem"));
        let cfg: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(cfg.get_password(), Some(&b"p'w\\d x"[..]));
        let (_, _, root) = split_ssl("sslrootcert=/a%20b/ca.pem").unwrap();
        assert_eq!(root.as_deref(), Some("/a%20b/ca.pem"));
        let (rest, _, _) = split_ssl("  ").unwrap();
        assert_eq!(rest, "");
    }

    #[test]
    fn malformed_keyword_strings_are_refused_without_their_values() {
        let e = split_ssl("host=h sslrootcert='/a b/ca.pem").unwrap_err().to_string();
        assert!(
            e.contains("sslrootcert has no closing quote") && !e.contains("/a b"),
            "{e}"
        );
        let e = split_ssl("host=h s3cret").unwrap_err().to_string();
        assert!(e.contains("character 8 has no `=`") && !e.contains("s3cret"), "{e}");
    }
}
