//! DKIM signatures on outgoing email (RFC 6376, RFC 8463 for Ed25519), and
//! the TXT record a sending domain publishes so receivers can check them.
//!
//! The signing itself is lettre's; Herald reads the keys operators actually
//! have (PEM files as `openssl genrsa`, `openssl genpkey` or `opendkim-genkey`
//! write them) and chooses the headers to sign.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lettre::Message;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use serde::{Deserialize, Serialize};

use crate::signing::Secret;

/// `dkim = { ... }` of an email provider: sign every message it sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    /// The selector (`s=`): receivers look the key up at
    /// `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// The signing domain (`d=`); unset, the domain of the provider's `from`,
    /// which DMARC's strict alignment asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// A PEM file with the private key: RSA (PKCS#1 or PKCS#8, at least
    /// 1024 bits, 2048 advised) or Ed25519 (PKCS#8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,
    /// The same PEM given inline (from a secret store's environment
    /// variable, say) instead of a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<Secret>,
}

/// Headers under the signature. `List-Unsubscribe` and its `-Post` must be
/// signed for mailbox providers to offer one-click unsubscribe; a header a
/// message lacks is signed as absent, so nobody can add it on the way.
const SIGNED_HEADERS: [&str; 9] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// RSA keys shorter than this are refused by receivers (RFC 8301).
const MIN_RSA_BITS: usize = 1024;

/// Signs the messages of one provider.
pub struct DkimSigner {
    config: DkimConfig,
    selector: String,
    domain: String,
    /// `k=` of the key's record.
    algorithm: &'static str,
    /// `p=` of the key's record: the public key, base64.
    public_key: String,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner")
            .field("selector", &self.selector)
            .field("domain", &self.domain)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl DkimSigner {
    /// Reads the key; `from_domain` is the sender's domain, the default `d=`.
    pub fn new(settings: &DkimSettings, from_domain: &str) -> Result<DkimSigner, String> {
        let selector = settings.selector.trim();
        if !is_dns_name(selector) {
            return Err(format!(
                "dkim.selector {:?} is not a DNS label sequence (letters, digits, hyphens, dots)",
                settings.selector
            ));
        }
        let domain = settings
            .domain
            .as_deref()
            .unwrap_or(from_domain)
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !is_dns_name(&domain) {
            return Err(format!("dkim.domain {domain:?} is not a domain name"));
        }
        let pem = match (&settings.private_key_file, &settings.private_key) {
            (Some(path), None) => std::fs::read_to_string(path).map_err(|error| {
                format!(
                    "dkim.private_key_file {}: cannot be read: {error}",
                    path.display()
                )
            })?,
            (None, Some(pem)) => pem.expose().to_string(),
            _ => {
                return Err("dkim: set exactly one of private_key_file and private_key".to_string());
            }
        };
        let key = PrivateKey::from_pem(&pem)?;
        let config = DkimConfig::new(
            selector.to_string(),
            domain.clone(),
            key.signing_key,
            SIGNED_HEADERS
                .into_iter()
                .map(HeaderName::new_from_ascii_str)
                .collect(),
            // Relaxed survives relays that refold headers or trim spaces.
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        );
        Ok(DkimSigner {
            config,
            selector: selector.to_string(),
            domain,
            algorithm: key.algorithm,
            public_key: key.public_key,
        })
    }

    /// Adds the `DKIM-Signature` header; the last change to a message.
    pub fn sign(&self, message: &mut Message) {
        message.sign(&self.config);
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The TXT record that publishes the public key.
    pub fn record(&self) -> TxtRecord {
        TxtRecord {
            name: format!("{}._domainkey.{}.", self.selector, self.domain),
            value: format!("v=DKIM1; k={}; p={}", self.algorithm, self.public_key),
        }
    }
}

/// A DNS TXT record as an operator publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtRecord {
    /// Fully qualified, with the final dot.
    pub name: String,
    pub value: String,
}

impl std::fmt::Display for TxtRecord {
    /// Zone-file form. A TXT string holds at most 255 bytes, so a longer
    /// value (a 2048-bit key) is written as several strings, which
    /// receivers join.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} 3600 IN TXT", self.name)?;
        let bytes = self.value.as_bytes();
        for chunk in bytes.chunks(255) {
            // The value is ASCII (base64 and tags), so chunks are whole characters.
            write!(f, " \"{}\"", String::from_utf8_lossy(chunk))?;
        }
        Ok(())
    }
}

struct PrivateKey {
    signing_key: DkimSigningKey,
    algorithm: &'static str,
    public_key: String,
}

impl PrivateKey {
    fn from_pem(pem: &str) -> Result<PrivateKey, String> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
        use rsa::pkcs8::EncodePublicKey as _;
        use rsa::traits::PublicKeyParts as _;

        let rsa = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(pem));
        if let Ok(key) = rsa {
            let bits = key.size() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "dkim: the RSA key has {bits} bits; receivers refuse fewer than {MIN_RSA_BITS} (2048 advised)"
                ));
            }
            let public_key = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|error| format!("dkim: cannot encode the RSA public key: {error}"))?;
            // lettre reads PKCS#1 only.
            let pkcs1 = key
                .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                .map_err(|error| format!("dkim: cannot re-encode the RSA key: {error}"))?;
            let signing_key = DkimSigningKey::new(&pkcs1, DkimSigningAlgorithm::Rsa)
                .map_err(|error| format!("dkim: the RSA key: {error}"))?;
            return Ok(PrivateKey {
                signing_key,
                algorithm: "rsa",
                public_key: STANDARD.encode(public_key.as_bytes()),
            });
        }
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            // lettre reads the 32-byte seed, base64.
            let signing_key = DkimSigningKey::new(
                &STANDARD.encode(key.to_bytes()),
                DkimSigningAlgorithm::Ed25519,
            )
            .map_err(|error| format!("dkim: the Ed25519 key: {error}"))?;
            return Ok(PrivateKey {
                signing_key,
                algorithm: "ed25519",
                public_key: STANDARD.encode(key.verifying_key().to_bytes()),
            });
        }
        Err("dkim: the private key is not a PEM RSA key (PKCS#1 `BEGIN RSA PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`) nor a PKCS#8 Ed25519 key; an encrypted key must be decrypted first".to_string())
    }
}

/// Dot-separated labels of letters, digits, hyphens and underscores.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PKCS1: &str = include_str!("../../tests/fixtures/dkim/rsa-pkcs1.pem");
    const RSA_PKCS8: &str = include_str!("../../tests/fixtures/dkim/rsa-pkcs8.pem");
    const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/dkim/rsa-public.b64");
    const ED25519: &str = include_str!("../../tests/fixtures/dkim/ed25519.pem");
    const ED25519_PUBLIC: &str = include_str!("../../tests/fixtures/dkim/ed25519-public.b64");

    fn settings(pem: &str) -> DkimSettings {
        DkimSettings {
            selector: "herald".to_string(),
            domain: None,
            private_key_file: None,
            private_key: Some(Secret::new(pem)),
        }
    }

    #[test]
    fn an_rsa_key_in_either_pem_form_publishes_what_openssl_derives() {
        for pem in [RSA_PKCS1, RSA_PKCS8] {
            let signer = DkimSigner::new(&settings(pem), "Mail.Example.com").unwrap();
            let record = signer.record();
            assert_eq!(record.name, "herald._domainkey.mail.example.com.");
            assert_eq!(
                record.value,
                format!("v=DKIM1; k=rsa; p={}", RSA_PUBLIC.trim())
            );
        }
    }

    #[test]
    fn an_ed25519_key_publishes_its_raw_public_key() {
        let signer = DkimSigner::new(&settings(ED25519), "example.com").unwrap();
        assert_eq!(
            signer.record().value,
            format!("v=DKIM1; k=ed25519; p={}", ED25519_PUBLIC.trim())
        );
    }

    #[test]
    fn a_long_record_is_split_into_strings_of_at_most_255_bytes() {
        let signer = DkimSigner::new(&settings(RSA_PKCS1), "example.com").unwrap();
        let record = signer.record();
        let written = record.to_string();
        let strings: Vec<&str> = written.split('"').skip(1).step_by(2).collect::<Vec<_>>();
        assert!(strings.len() > 1, "{written}");
        assert!(strings.iter().all(|s| s.len() <= 255), "{written}");
        assert_eq!(strings.concat(), record.value);
        assert!(written.starts_with("herald._domainkey.example.com. 3600 IN TXT \"v=DKIM1"));
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let error = DkimSigner::new(&settings("not a key"), "example.com").unwrap_err();
        assert!(error.contains("not a PEM RSA key"), "{error}");
        let both = DkimSettings {
            private_key_file: Some("/nonexistent".into()),
            ..settings(RSA_PKCS1)
        };
        let error = DkimSigner::new(&both, "example.com").unwrap_err();
        assert!(error.contains("exactly one"), "{error}");
        let missing = DkimSettings {
            private_key: None,
            private_key_file: Some("/nonexistent/dkim.pem".into()),
            ..settings(RSA_PKCS1)
        };
        let error = DkimSigner::new(&missing, "example.com").unwrap_err();
        assert!(error.contains("/nonexistent/dkim.pem"), "{error}");
        let selector = DkimSettings {
            selector: "two words".to_string(),
            ..settings(RSA_PKCS1)
        };
        let error = DkimSigner::new(&selector, "example.com").unwrap_err();
        assert!(error.contains("selector"), "{error}");
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let signer = DkimSigner::new(&settings(RSA_PKCS1), "example.com").unwrap();
        let shown = format!("{signer:?} {:?}", settings(RSA_PKCS1));
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
}
