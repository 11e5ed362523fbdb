//! Storing authorization commands (proto::storing; docs/PROTOCOL.md
//! "Storing authorization"): STORING REQUEST, STORE DATA UNDER
//! AUTHORIZATION, and the application rules and storing certificate the card
//! reports.

use super::CardClient;
use crate::apdu::{Command, StatusWord};
use crate::error::{Error, Result};
use cardvault_proto::storing::{Authorization, StorageRule, StoringDataInfo, StoringRequest};
use cardvault_proto::tag;
use serde::Serialize;

/// The card's storing request and the certificate of the key that signed it.
#[derive(Debug, Clone)]
pub struct CardStoringRequest {
    pub request: StoringRequest,
    /// The card's storing key certificate (DER X.509).
    pub certificate: Vec<u8>,
}

/// One application's owner and storage rule, as the card reports it (DF34).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApplicationRule {
    pub id: u8,
    /// `issuer`, or the data provider's name.
    pub owner: String,
    #[serde(serialize_with = "crate::util::serialize_display")]
    pub rule: StorageRule,
    pub provider_alone: bool,
}

/// One application of the card's table (DF30): its pages and name.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApplicationEntry {
    pub id: u8,
    pub first_page: u16,
    pub page_count: u16,
    pub value: bool,
    pub name: String,
}

fn malformed(command: &'static str, reason: &str) -> Error {
    Error::Malformed {
        command,
        reason: reason.into(),
    }
}

impl CardClient<'_> {
    /// STORING REQUEST for `sdi.app`: the card draws and keeps a fresh
    /// challenge and signs the request with its storing key.
    pub fn storing_request(&mut self, sdi: &StoringDataInfo) -> Result<CardStoringRequest> {
        let raw = self.exec(&Command::storing_request(sdi.app, sdi))?;
        let [h, l, rest @ ..] = raw.as_slice() else {
            return Err(malformed("STORING REQUEST", "answer too short"));
        };
        let n = u16::from_be_bytes([*h, *l]) as usize;
        if rest.len() < n {
            return Err(malformed("STORING REQUEST", "request cut short"));
        }
        let (req, cert) = rest.split_at(n);
        let request =
            StoringRequest::parse(req).ok_or_else(|| malformed("STORING REQUEST", "not a storing request"))?;
        if &request.sdi != sdi {
            return Err(malformed("STORING REQUEST", "the card signed another SDI than asked"));
        }
        Ok(CardStoringRequest {
            request,
            certificate: cert.to_vec(),
        })
    }

    /// STORE DATA UNDER AUTHORIZATION: the status word is the card's verdict
    /// (9000 written; 6982 no valid authorization; 6A80 not the authorized data).
    pub fn store_under_authorization(&mut self, app: u8, auth: &Authorization, data: &[u8]) -> Result<StatusWord> {
        Ok(self
            .transmit(&Command::store_data_under_authorization(app, &auth.encode(), data))?
            .sw)
    }

    /// The card's storing key certificate (DER), when it has one.
    pub fn storing_certificate(&mut self) -> Result<Option<Vec<u8>>> {
        self.data_object(tag::STORING_CERTIFICATE)
    }

    /// The card's application table (DF30).
    pub fn application_table(&mut self) -> Result<Vec<ApplicationEntry>> {
        let Some(v) = self.data_object(tag::APPLICATIONS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut d = v.as_slice();
        while !d.is_empty() {
            let [id, f1, f2, c1, c2, flags, n, rest @ ..] = d else {
                return Err(malformed("GET DATA", "application table cut short"));
            };
            let n = *n as usize;
            if rest.len() < n {
                return Err(malformed("GET DATA", "application name cut short"));
            }
            out.push(ApplicationEntry {
                id: *id,
                first_page: u16::from_be_bytes([*f1, *f2]),
                page_count: u16::from_be_bytes([*c1, *c2]),
                value: flags & 1 != 0,
                name: String::from_utf8_lossy(&rest[..n]).into_owned(),
            });
            d = &rest[n..];
        }
        Ok(out)
    }

    /// RESTORE DATA P1 03: a data provider's agreement (application ||
    /// signature || DPR) to the restore in progress. The status word is the
    /// card's verdict (9000 agreed; 6982 not this provider, chain, card or
    /// challenge; 6A80 not a provider's `authorized` application).
    pub fn restore_agreement(&mut self, data: &[u8]) -> Result<StatusWord> {
        Ok(self.transmit(&Command::restore_agreement(data))?.sw)
    }

    /// Each application's owner and storage rule (empty on cards without them).
    pub fn application_rules(&mut self) -> Result<Vec<ApplicationRule>> {
        let Some(mut v) = self.data_object(tag::APPLICATION_RULES)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut d = v.as_slice();
        while !d.is_empty() {
            let [id, rule, flags, n, rest @ ..] = d else {
                return Err(malformed("GET DATA", "application rules cut short"));
            };
            let n = *n as usize;
            if rest.len() < n {
                return Err(malformed("GET DATA", "application owner cut short"));
            }
            out.push(ApplicationRule {
                id: *id,
                owner: String::from_utf8_lossy(&rest[..n]).into_owned(),
                rule: StorageRule::from_code(*rule).ok_or_else(|| malformed("GET DATA", "unknown storage rule"))?,
                provider_alone: flags & 1 != 0,
            });
            d = &rest[n..];
        }
        v.clear();
        Ok(out)
    }
}
