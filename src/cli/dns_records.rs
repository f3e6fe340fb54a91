//! `herald dns-records --domain D`: the TXT records a sending domain
//! publishes so receivers accept Herald's email: SPF (which relays may send
//! for it), DKIM (each signing key of the email providers that send for it)
//! and DMARC (what receivers do with mail that fails both).

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::config::Config;
use crate::providers::ProviderConfig;
use crate::providers::dkim::{DkimSigner, TxtRecord};

#[derive(Debug, clap::Args)]
pub struct DnsRecordsArgs {
    /// The sending domain: the domain of an email provider's `from`, or of
    /// its DKIM signature.
    #[arg(long)]
    domain: String,
    /// Where receivers send DMARC aggregate reports (default postmaster@DOMAIN).
    #[arg(long)]
    reports_to: Option<String>,
}

/// The records, in zone-file form with a comment above each.
pub fn run(config: &Config, args: &DnsRecordsArgs) -> anyhow::Result<String> {
    let domain = args
        .domain
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut relays = BTreeSet::new();
    let mut keys = Vec::new();
    let mut senders = BTreeSet::new();
    for (name, provider) in &config.providers {
        let ProviderConfig::Smtp(smtp) = provider else {
            continue;
        };
        let from_domain = smtp
            .from
            .rsplit_once('@')
            .map(|(_, domain)| domain.trim_end_matches('>').trim().to_ascii_lowercase())
            .unwrap_or_default();
        let signer = smtp
            .dkim
            .as_ref()
            .map(|dkim| DkimSigner::new(dkim, &from_domain))
            .transpose()
            .map_err(|error| anyhow::anyhow!("provider {name}: {error}"))?;
        senders.insert(from_domain.clone());
        if let Some(signer) = &signer {
            senders.insert(signer.domain().to_string());
        }
        if from_domain == domain {
            relays.insert(smtp.host.to_ascii_lowercase());
        }
        if let Some(signer) = signer.filter(|signer| signer.domain() == domain) {
            keys.push((name.clone(), signer));
        }
    }
    if relays.is_empty() && keys.is_empty() {
        let known: Vec<&str> = senders
            .iter()
            .map(String::as_str)
            .filter(|d| !d.is_empty())
            .collect();
        anyhow::bail!(
            "no email provider sends for {domain}; the configured sending domains are: {}",
            if known.is_empty() {
                "none (add [providers.NAME] with kind = \"smtp\" and a from address)".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    let mut out = format!("; DNS records for {domain}, from Herald's configuration.\n");
    if !relays.is_empty() {
        out.push_str(&spf(&domain, &relays));
    }
    for (provider, signer) in &keys {
        out.push_str(&format!(
            "\n; DKIM: the public key of provider {provider:?}'s signatures.\n{}\n",
            signer.record()
        ));
    }
    if keys.is_empty() {
        out.push_str(&format!(
            "\n; DKIM: no provider signs for {domain}; add dkim = {{ selector, private_key_file }} to its email provider.\n"
        ));
    }
    let reports_to = args
        .reports_to
        .clone()
        .unwrap_or_else(|| format!("postmaster@{domain}"));
    let dmarc = TxtRecord {
        name: format!("_dmarc.{domain}."),
        value: format!("v=DMARC1; p=none; adkim=s; aspf=r; rua=mailto:{reports_to}"),
    };
    out.push_str(&format!(
        "\n; DMARC: start with p=none and read the reports sent to {reports_to};\n\
         ; once they show only your own mail passing, move to p=quarantine, then p=reject.\n{dmarc}\n"
    ));
    Ok(out)
}

/// One SPF record for the domain (a domain may have only one): the relays
/// Herald hands its mail to.
fn spf(domain: &str, relays: &BTreeSet<String>) -> String {
    let mut mechanisms = Vec::new();
    let mut notes = Vec::new();
    for relay in relays {
        match relay.parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => notes.push(format!(
                "; {relay} is this machine: authorise the servers it relays through instead."
            )),
            Ok(IpAddr::V4(ip)) => mechanisms.push(format!("ip4:{ip}")),
            Ok(IpAddr::V6(ip)) => mechanisms.push(format!("ip6:{ip}")),
            Err(_) if relay == "localhost" => notes.push(
                "; localhost is this machine: authorise the servers it relays through instead."
                    .to_string(),
            ),
            Err(_) => mechanisms.push(format!("a:{relay}")),
        }
    }
    mechanisms.push("~all".to_string());
    let record = TxtRecord {
        name: format!("{domain}."),
        value: format!("v=spf1 {}", mechanisms.join(" ")),
    };
    let mut out = String::from(
        "\n; SPF: the servers that may send mail for the domain. A relay that is a\n\
         ; service (Amazon SES, SendGrid) publishes an include: to use instead of a:.\n\
         ; Merge these mechanisms into an SPF record the domain already has.\n",
    );
    for note in notes {
        out.push_str(&note);
        out.push('\n');
    }
    out.push_str(&record.to_string());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::dkim::DkimSettings;
    use crate::providers::smtp::SmtpConfig;
    use crate::signing::Secret;

    fn config(providers: Vec<(&str, SmtpConfig)>) -> Config {
        let mut config = Config::default();
        for (name, smtp) in providers {
            config
                .providers
                .insert(name.to_string(), ProviderConfig::Smtp(smtp));
        }
        config
    }

    fn smtp(host: &str, from: &str, dkim: Option<DkimSettings>) -> SmtpConfig {
        SmtpConfig {
            host: host.to_string(),
            from: from.to_string(),
            dkim,
            ..SmtpConfig::default()
        }
    }

    fn args(domain: &str) -> DnsRecordsArgs {
        DnsRecordsArgs {
            domain: domain.to_string(),
            reports_to: None,
        }
    }

    #[test]
    fn spf_dkim_and_dmarc_for_a_signing_provider() {
        let dkim = DkimSettings {
            selector: "s1".to_string(),
            domain: None,
            private_key_file: None,
            private_key: Some(Secret::new(include_str!(
                "../../tests/fixtures/dkim/ed25519.pem"
            ))),
        };
        let config = config(vec![
            (
                "mail",
                smtp("smtp.relay.example", "Acme <news@Example.com>", Some(dkim)),
            ),
            ("backup", smtp("192.0.2.7", "alerts@example.com", None)),
            ("other", smtp("smtp.other.example", "x@other.example", None)),
        ]);
        let out = run(&config, &args("example.com.")).unwrap();
        assert!(
            out.contains(
                "\nexample.com. 3600 IN TXT \"v=spf1 ip4:192.0.2.7 a:smtp.relay.example ~all\""
            ),
            "{out}"
        );
        assert!(!out.contains("smtp.other.example"), "{out}");
        let public = include_str!("../../tests/fixtures/dkim/ed25519-public.b64").trim();
        assert!(
            out.contains(&format!(
                "s1._domainkey.example.com. 3600 IN TXT \"v=DKIM1; k=ed25519; p={public}\""
            )),
            "{out}"
        );
        assert!(
            out.contains("_dmarc.example.com. 3600 IN TXT \"v=DMARC1; p=none; adkim=s; aspf=r; rua=mailto:postmaster@example.com\""),
            "{out}"
        );
    }

    #[test]
    fn a_domain_nobody_sends_for_names_the_ones_configured() {
        let config = config(vec![("mail", smtp("relay", "a@example.com", None))]);
        let error = run(&config, &args("example.org")).unwrap_err().to_string();
        assert!(
            error.contains("no email provider sends for example.org"),
            "{error}"
        );
        assert!(error.contains("example.com"), "{error}");
    }

    #[test]
    fn a_loopback_relay_is_explained_not_authorised() {
        let config = config(vec![("mail", smtp("127.0.0.1", "a@example.com", None))]);
        let out = run(&config, &args("example.com")).unwrap();
        assert!(out.contains("\"v=spf1 ~all\""), "{out}");
        assert!(out.contains("127.0.0.1 is this machine"), "{out}");
        assert!(out.contains("no provider signs for example.com"), "{out}");
    }
}
