//! Batch issuance (FIG. 11): for each holder, take a blank card, personalize
//! it with the profile's commands, check every response, and report the card
//! as issued or rejected with the reason.
//!
//! Everything runs in the issuer's SCP11a session. A blank card is accepted
//! by its factory certificate (under a trusted factory CA) and leaves with a
//! registration certificate the issuer signed over a key the card generated
//! (NTT's registration certificate, [`register_card`]); when the factory
//! installed another issuer's root (the factory issuer), that issuer opens
//! the session and the card leaves with the issuing issuer's root installed.
//! The card also generates its signing key, which the issuer certifies
//! ([`certify_signing_key`]), and gets the registrar roots of storing
//! authorizations.

use super::station::{run_stations, Batch, CardSource, Station, StationEnv, StationEvent};
use crate::card::{CardClient, IssuerAuth};
use crate::error::{Error, Result};
use crate::issuer::IssuerCredentials;
use crate::secret::Secret;
use crate::vault::AuditEvent;
use cardvault_proto::cert::CardSubject;
use cardvault_proto::{from_hex, tag};
use serde::Serialize;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Which cards to issue per holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IssueProfile {
    /// Main card: PIN, key 1, member number, expiry.
    Main,
    /// Backup card: PIN and key 1 only.
    Backup,
    /// Main and backup card per holder, sharing key 1. Without a key1 column,
    /// key 1 is generated per holder, written to both cards and stored nowhere;
    /// issuing main and backup in separate runs then needs key1 in the file.
    Pair,
}

/// One holder record from the CSV file.
pub struct Holder {
    pub id: String,
    pub pin: Secret,
    pub member_number: Option<String>,
    pub expiry: Option<String>,
    pub key1: Option<Secret>,
}

/// Columns of the holder file (header line required, in any order).
pub const COLUMNS: &[&str] = &["holder", "pin", "member_number", "expiry", "key1"];

fn valid_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_graphic() || c == ' ')
}

/// Parse and validate the holder file. Every bad row is reported (with its
/// line number) before any card is touched.
pub fn parse_holders(text: &str, profile: IssueProfile) -> Result<Vec<Holder>> {
    // RFC 4180 through the csv crate: quoted fields, CRLF line ends and a
    // UTF-8 byte order mark (as spreadsheets write them), `#` comment lines.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let mut records = reader.records().filter(|r| match r {
        Ok(r) => !r.iter().all(str::is_empty),
        Err(_) => true,
    });
    let bad_csv = |e: csv::Error| Error::Usage(format!("holder file: not valid CSV: {e}"));
    let header = records
        .next()
        .ok_or_else(|| Error::Usage("the holder file is empty".into()))?
        .map_err(bad_csv)?;
    let cols: Vec<String> = header.iter().map(|c| c.to_ascii_lowercase()).collect();
    for c in &cols {
        if !COLUMNS.contains(&c.as_str()) {
            return Err(Error::Usage(format!(
                "holder file: unknown column '{c}' (columns: {})",
                COLUMNS.join(", ")
            )));
        }
    }
    for need in ["holder", "pin"] {
        if !cols.iter().any(|c| c == need) {
            return Err(Error::Usage(format!("holder file: the header has no '{need}' column")));
        }
    }
    let mut holders = Vec::new();
    let mut problems = Vec::new();
    // First line of each holder id and member number, to name both lines of a repeat.
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut members: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for record in records {
        let record = record.map_err(bad_csv)?;
        let n = record.position().map_or(0, |p| p.line() as usize);
        let fields: Vec<&str> = record.iter().collect();
        if fields.len() != cols.len() {
            problems.push(format!(
                "line {n}: {} fields, the header has {}",
                fields.len(),
                cols.len()
            ));
            continue;
        }
        let get = |name: &str| {
            cols.iter()
                .position(|c| c == name)
                .map(|p| fields[p])
                .filter(|v| !v.is_empty())
        };
        let id = get("holder").unwrap_or("");
        if !valid_text(id) || id.contains(['/', '\\']) {
            problems.push(format!("line {n}: holder id '{id}' is empty, too long or has '/'"));
            continue;
        }
        if let Some(first) = seen.get(id) {
            problems.push(format!("line {n}: holder '{id}' appears twice (lines {first} and {n})"));
            continue;
        }
        seen.insert(id.to_string(), n);
        let pin = get("pin").unwrap_or("");
        if !(cardvault_proto::PIN_MIN_LEN..=cardvault_proto::PIN_MAX_LEN).contains(&pin.len())
            || !pin.bytes().all(|b| b.is_ascii_digit())
        {
            problems.push(format!("line {n}: holder '{id}': the PIN must be 4 to 16 digits"));
            continue;
        }
        let member = get("member_number").map(str::to_string);
        let expiry = get("expiry").map(str::to_string);
        for (what, v) in [("member_number", &member), ("expiry", &expiry)] {
            if let Some(v) = v {
                if !valid_text(v) {
                    problems.push(format!(
                        "line {n}: holder '{id}': {what} '{v}' is not 1 to 32 printable characters"
                    ));
                }
            }
        }
        if let Some(m) = &member {
            // A station recognizes a holder's card by its member number: two
            // holders with one number would take each other's cards.
            match members.get(m) {
                Some(first) => problems.push(format!(
                    "line {n}: holder '{id}': member number '{m}' is also on line {first} (lines {first} and {n})"
                )),
                None => {
                    members.insert(m.clone(), n);
                }
            }
        }
        if let Some(e) = &expiry {
            let ok = e.len() == 7
                && e.as_bytes()[4] == b'-'
                && e[..4].parse::<u16>().is_ok()
                && matches!(e[5..].parse::<u8>(), Ok(1..=12));
            if !ok {
                problems.push(format!("line {n}: holder '{id}': expiry '{e}' is not YYYY-MM"));
            }
        }
        if matches!(profile, IssueProfile::Main | IssueProfile::Pair) && (member.is_none() || expiry.is_none()) {
            problems.push(format!(
                "line {n}: holder '{id}': a main card needs member_number and expiry"
            ));
        }
        let key1 = match get("key1") {
            Some(k) => match from_hex(k).filter(|k| k.len() == 32) {
                Some(k) => Some(Zeroizing::new(k)),
                None => {
                    problems.push(format!("line {n}: holder '{id}': key1 must be 32 bytes of hex"));
                    continue;
                }
            },
            None => None,
        };
        holders.push(Holder {
            id: id.to_string(),
            pin: Zeroizing::new(pin.as_bytes().to_vec()),
            member_number: member,
            expiry,
            key1,
        });
    }
    if !problems.is_empty() {
        return Err(Error::Usage(format!(
            "holder file has {} bad row(s); nothing was issued:\n  {}",
            problems.len(),
            problems.join("\n  ")
        )));
    }
    if holders.is_empty() {
        return Err(Error::Usage("the holder file has no holder rows".into()));
    }
    Ok(holders)
}

/// Options shared by every card of a batch.
pub struct IssueOptions {
    /// The issuer: its operator opens the SCP11a session on each blank card,
    /// its root signs the registration certificates and ends up installed on
    /// the cards. `None`: the reader's built-in test issuer (embedded cards).
    pub issuer: Option<crate::card::IssuerAuth>,
    /// The issuer whose root the factory installed on the blank cards, when
    /// that is not `issuer`: it opens the session, installs `issuer`'s root
    /// and hands over. `None`: the reader's built-in test issuer, if any.
    pub factory_issuer: Option<crate::card::IssuerAuth>,
    pub key_group_size: u8,
    pub no_export_after_backup: bool,
    /// The issuer domain's card-common key, loaded into each card (LOAD
    /// DOMAIN KEY, in the issuer's SCP11a session). `None` issues cards
    /// without one: they make no backups and take no other card's.
    pub domain: Option<std::sync::Arc<crate::domain::DomainKey>>,
    /// The registrar roots installed on each card (storing authorization).
    /// `None`: the reader's built-in test registrars (embedded cards), else
    /// none (such cards take no storing authorization).
    pub registrars: Option<std::sync::Arc<RegistrarRootsDer>>,
}

/// The two registrar roots a card trusts for storing authorizations (DER),
/// installed at issuance (PUT DATA `BF23`, `BF24`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarRootsDer {
    pub issuer_registrar: Vec<u8>,
    pub data_registrar: Vec<u8>,
}

impl RegistrarRootsDer {
    /// From PEM (or DER) files; each must be one self-signed P-256 CA.
    pub fn from_pem(issuer_registrar: &[u8], data_registrar: &[u8]) -> Result<RegistrarRootsDer> {
        let one = |what: &str, b: &[u8]| -> Result<Vec<u8>> {
            let c = openssl::x509::X509::from_pem(b)
                .or_else(|_| openssl::x509::X509::from_der(b))
                .map_err(|e| Error::Usage(format!("{what}: not a certificate: {e}")))?;
            if !cardvault_proto::cert::is_root(&c) {
                return Err(Error::Usage(format!(
                    "{what}: not a registrar root (a self-signed P-256 CA certificate)"
                )));
            }
            c.to_der().map_err(|e| Error::Data(e.to_string()))
        };
        Ok(RegistrarRootsDer {
            issuer_registrar: one("issuer registrar root", issuer_registrar)?,
            data_registrar: one("data registrar root", data_registrar)?,
        })
    }
}

/// Why a card cannot be issued as asked: it goes to the reject bin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueRefusal {
    #[error("card {card} is already issued (role {role})")]
    AlreadyIssued { card: String, role: crate::card::CardRole },
    /// Read back after END PERSONALIZATION, the card does not say what was written.
    #[error("card {card} does not report the personalization just written")]
    PersonalizationNotReported { card: String },
    /// No issuer was named and the reader has no built-in one (PC/SC).
    #[error("no issuer to certify the card: name the issuer's directory (made by issuer init)")]
    NoIssuer,
    /// The issuer's credentials have no root certificate to install.
    #[error("the issuer's credentials hold no root certificate to install on the card")]
    NoIssuerRoot,
}

/// Personalize one blank card as `role` for `holder`.
/// Returns the card number. Any refusal is an error: the card goes to the
/// reject bin.
pub fn personalize(
    card: &mut CardClient<'_>,
    holder: &Holder,
    role: Role,
    key1: &[u8],
    opts: &IssueOptions,
) -> Result<String> {
    let st = card.status()?;
    if st.issued {
        return Err(IssueRefusal::AlreadyIssued {
            card: st.card_number,
            role: st.role,
        }
        .into());
    }
    let (issuer, via_factory) = open_issuance_session(card, opts, &st.card_number)?;
    card.reset_retry_counter(Some(&holder.pin))?;
    card.put_data(tag::ROLE, role.as_str().as_bytes())?;
    card.put_data(tag::KEY_GROUP_SIZE, &[opts.key_group_size])?;
    if role == Role::Main {
        let member = holder.member_number.as_deref().unwrap_or_default();
        let expiry = holder.expiry.as_deref().unwrap_or_default();
        card.put_data(tag::MEMBER_NUMBER, member.as_bytes())?;
        card.put_data(tag::EXPIRY, expiry.as_bytes())?;
        card.put_data(tag::EXPORT_POLICY, &[opts.no_export_after_backup as u8])?;
    }
    card.write_key_element(1, key1)?;
    load_domain_key(card, opts)?;
    register_card(card, &issuer, holder, role, &st.card_number, via_factory, opts)?;
    certify_signing_key(card, &issuer, holder, role, &st.card_number)?;
    install_registrars(card, opts)?;
    card.end_personalization()?;
    // Read back what the card now says and check it against the profile.
    let after = card.status()?;
    let wanted_member = (role == Role::Main).then(|| holder.member_number.clone()).flatten();
    if !after.issued || after.role != role.as_str() || after.member_number != wanted_member {
        return Err(IssueRefusal::PersonalizationNotReported {
            card: after.card_number,
        }
        .into());
    }
    Ok(after.card_number)
}

/// Load the issuer domain's card-common key (when the batch has one) and
/// read back that the card now names the domain and generation.
fn load_domain_key(card: &mut CardClient<'_>, opts: &IssueOptions) -> Result<()> {
    let Some(domain) = &opts.domain else {
        return Ok(());
    };
    card.load_domain_key(&domain.load())?;
    if card.domain()? != Some(domain.domain()) {
        return Err(IssueRefusal::PersonalizationNotReported {
            card: card.card_number()?,
        }
        .into());
    }
    Ok(())
}

/// The issuer's credentials for this batch: the named issuer, else the
/// reader's built-in test issuer.
fn issuing_issuer(card: &CardClient<'_>, opts: &IssueOptions) -> Result<Arc<IssuerCredentials>> {
    if let Some(i) = &opts.issuer {
        return Ok(i.credentials().clone());
    }
    let b = card.built_in_issuer().ok_or(IssueRefusal::NoIssuer)?;
    Ok(Arc::new(IssuerCredentials::from_built_in(&b)?))
}

/// Open the SCP11a issuance session on a blank card: with the issuer's own
/// operator when the card has the issuer's root installed, else with the
/// factory issuer's (whose root the factory installed). Returns the issuer
/// and whether the factory issuer opened the session (so the issuer's root
/// must be installed). The card's certificate is checked before anything is
/// sent (factory certificate under a trusted factory CA).
fn open_issuance_session(
    card: &mut CardClient<'_>,
    opts: &IssueOptions,
    card_number: &str,
) -> Result<(Arc<IssuerCredentials>, bool)> {
    let issuer = issuing_issuer(card, opts)?;
    let refused = match card.issuer_authenticate(&IssuerAuth::Operator(issuer.clone()), card_number) {
        Ok(()) => return Ok((issuer, false)),
        Err(e @ Error::IssuerRefused(_)) => e,
        Err(e) => return Err(e),
    };
    let factory = match (&opts.factory_issuer, card.built_in_issuer()) {
        (Some(f), _) => f.credentials().clone(),
        (None, Some(b)) => Arc::new(IssuerCredentials::from_built_in(&b)?),
        (None, None) => return Err(refused),
    };
    let same_root = |a: &IssuerCredentials, b: &IssuerCredentials| match (a.root(), b.root()) {
        (Some(x), Some(y)) => x.to_der().ok() == y.to_der().ok(),
        _ => false,
    };
    if same_root(&factory, &issuer) {
        return Err(refused);
    }
    card.issuer_authenticate(&IssuerAuth::Operator(factory), card_number)?;
    Ok((issuer, true))
}

/// The card profile extension of a registration certificate
/// (docs/FORMATS.md, "Certificates").
fn profile_text(holder: &Holder, role: Role, opts: &IssueOptions) -> String {
    let mut t = format!("profile={role};key_group_size={}", opts.key_group_size);
    if role == Role::Main {
        if let Some(e) = &holder.expiry {
            t.push_str(&format!(";expiry={e}"));
        }
        t.push_str(&format!(
            ";no_export_after_backup={}",
            opts.no_export_after_backup as u8
        ));
    }
    t
}

/// The registration certificate (NTT, 004): install the issuer's root when
/// the factory issuer opened the session, have the card generate a new ECKA
/// key pair, sign the certificate over it (card number, role, member number,
/// validity, profile) and store it; the card checks it chains to its root
/// and certifies its new key. Then a new SCP11a session with the issuer's
/// own operator proves the card holds the certified key, presents the new
/// certificate and accepts the issuer.
fn register_card(
    card: &mut CardClient<'_>,
    issuer: &Arc<IssuerCredentials>,
    holder: &Holder,
    role: Role,
    card_number: &str,
    install_root: bool,
    opts: &IssueOptions,
) -> Result<()> {
    if install_root {
        let root = issuer.root().ok_or(IssueRefusal::NoIssuerRoot)?;
        let der = root.to_der().map_err(|e| Error::Data(e.to_string()))?;
        card.install_trust_anchor(&der)?;
    }
    let public = card.generate_ecka_key()?;
    let subject = CardSubject {
        card_number: card_number.to_string(),
        role: role.as_str().to_string(),
        member_number: (role == Role::Main).then(|| holder.member_number.clone()).flatten(),
    };
    let der = issuer.certify_card(&public, &subject, &profile_text(holder, role, opts))?;
    card.store_registration_certificate(&der)?;
    card.issuer_authenticate(&IssuerAuth::Operator(issuer.clone()), card_number)?;
    let certified = card.identity().map(|i| (i.subject.clone(), i.public_key.clone()));
    if certified != Some((subject, public)) {
        return Err(IssueRefusal::PersonalizationNotReported {
            card: card_number.to_string(),
        }
        .into());
    }
    Ok(())
}

/// The card's signing key (its storing key: it signs storing requests and
/// DESTROY KEY receipts): the card generates it (GENERATE SIGNING KEY), the
/// issuer's root certifies it for the card's number and role, the card
/// checks the certificate under its root and for its new key (PUT DATA
/// `DF35`), and the certificate read back must be the one signed.
fn certify_signing_key(
    card: &mut CardClient<'_>,
    issuer: &Arc<IssuerCredentials>,
    holder: &Holder,
    role: Role,
    card_number: &str,
) -> Result<()> {
    let public = card.generate_signing_key()?;
    let subject = CardSubject {
        card_number: card_number.to_string(),
        role: role.as_str().to_string(),
        member_number: (role == Role::Main).then(|| holder.member_number.clone()).flatten(),
    };
    let der = issuer.certify_card_signing_key(&public, &subject)?;
    card.store_signing_certificate(&der)?;
    if card.storing_certificate()?.as_deref() != Some(&der[..]) {
        return Err(IssueRefusal::PersonalizationNotReported {
            card: card_number.to_string(),
        }
        .into());
    }
    Ok(())
}

/// Install the registrar roots (issue 13: both go onto the card with the
/// issuer root): the batch's, else the reader's built-in test registrars.
fn install_registrars(card: &mut CardClient<'_>, opts: &IssueOptions) -> Result<()> {
    let roots = match (&opts.registrars, card.built_in_issuer()) {
        (Some(r), _) => r.as_ref().clone(),
        (None, Some(b)) => RegistrarRootsDer::from_pem(b.issuer_registrar, b.data_registrar)?,
        (None, None) => return Ok(()),
    };
    card.install_registrar_roots(&roots.issuer_registrar, &roots.data_registrar)
}

/// The role a card is issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Main,
    Backup,
}

impl Role {
    /// The role as the card stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::Backup => "backup",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl IssueProfile {
    /// The cards issued per holder, in the order a station issues them.
    pub fn roles(self) -> &'static [Role] {
        match self {
            IssueProfile::Main => &[Role::Main],
            IssueProfile::Backup => &[Role::Backup],
            IssueProfile::Pair => &[Role::Main, Role::Backup],
        }
    }
}

/// What became of one card of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardOutcome {
    Issued {
        card_number: String,
    },
    /// The card goes to the reject bin; `card_number` if the card told it.
    Rejected {
        card_number: Option<String>,
        reason: String,
    },
}

/// One card of the batch report: for whom, as what, in which reader, and
/// what became of it. Serialized as one row of `issue --json`'s `cards`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCard {
    pub holder: String,
    pub role: Role,
    /// The reader the card was in (empty when no card was reached).
    pub reader: String,
    pub outcome: CardOutcome,
}

impl IssuedCard {
    pub fn is_issued(&self) -> bool {
        matches!(self.outcome, CardOutcome::Issued { .. })
    }

    pub fn card_number(&self) -> Option<&str> {
        match &self.outcome {
            CardOutcome::Issued { card_number } => Some(card_number),
            CardOutcome::Rejected { card_number, .. } => card_number.as_deref(),
        }
    }

    /// Why the card was rejected.
    pub fn reason(&self) -> Option<&str> {
        match &self.outcome {
            CardOutcome::Issued { .. } => None,
            CardOutcome::Rejected { reason, .. } => Some(reason),
        }
    }

    /// "issued" or "rejected", as the report and the audit trail say it.
    pub fn result(&self) -> &'static str {
        if self.is_issued() {
            "issued"
        } else {
            "rejected"
        }
    }
}

impl Serialize for IssuedCard {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Row<'a> {
            holder: &'a str,
            role: Role,
            reader: &'a str,
            card_number: Option<&'a str>,
            result: &'static str,
            reason: Option<&'a str>,
        }
        Row {
            holder: &self.holder,
            role: self.role,
            reader: &self.reader,
            card_number: self.card_number(),
            result: self.result(),
            reason: self.reason(),
        }
        .serialize(s)
    }
}

/// Every station must have a reader for every card the profile issues.
pub fn check_stations(stations: &[Station], profile: IssueProfile) -> Result<()> {
    if stations.is_empty()
        || stations
            .iter()
            .any(|s| profile.roles().iter().any(|r| s.source(*r).is_none()))
    {
        return Err(Error::Usage(
            "every station needs a reader for the cards it issues".into(),
        ));
    }
    Ok(())
}

/// Issue the cards of every holder on `stations` in parallel, each station
/// taking the next holder of the file. Every card is recorded in the audit
/// trail, and issued cards are noted in the vault; a vault that cannot be
/// written stops the batch. The report lists the cards in file order, a
/// holder's main card before its backup card.
pub fn issue_batch(
    env: &StationEnv<'_>,
    stations: &[Station],
    holders: &[Holder],
    profile: IssueProfile,
    opts: &IssueOptions,
) -> Result<Vec<IssuedCard>> {
    check_stations(stations, profile)?;
    // Create (and migrate) the vault once, before the stations open their own.
    drop(env.vault()?);
    let outcomes = run_stations(stations, holders.len(), |_, station: &Station| {
        let mut vault = env.vault()?;
        Ok(move |batch: &Batch| -> Result<Option<(usize, Vec<IssuedCard>)>> {
            let Some(i) = batch.take_next() else {
                return Ok(None);
            };
            let h = &holders[i];
            // Key 1 from the record, or generated for this holder and stored nowhere.
            let key1 = match &h.key1 {
                Some(k) => k.clone(),
                None => Zeroizing::new(cardvault_proto::crypto::random::<32>().to_vec()),
            };
            let mut cards = Vec::new();
            for &role in profile.roles() {
                env.emit(StationEvent::Started {
                    holder: &h.id,
                    role: Some(role),
                });
                let Some(source) = station.source(role) else {
                    return Err(Error::Internal(format!("a station has no reader for {role} cards")));
                };
                let card = issue_card(env, batch, source, h, role, &key1, opts);
                if let Some(n) = card.card_number() {
                    batch.mark_handled(n);
                }
                // An issued card is recorded in the same commit as its audit entry.
                let issued = match &card.outcome {
                    CardOutcome::Issued { card_number } => Some((card_number.as_str(), role.as_str())),
                    _ => None,
                };
                vault.audit_noting(
                    AuditEvent {
                        event: "issue",
                        card: card.card_number().unwrap_or("-"),
                        peer: None,
                        result: card
                            .reason()
                            .map(|r| format!("rejected: {r}"))
                            .as_deref()
                            .unwrap_or("issued"),
                        details: serde_json::json!({
                            "holder": h.id,
                            "role": role,
                            "member_number": h.member_number,
                            "expiry": h.expiry,
                        }),
                    },
                    issued,
                )?;
                let stop_here = !card.is_issued() && batch.stopped();
                cards.push(card);
                env.emit(StationEvent::Finished);
                if stop_here {
                    break;
                }
            }
            Ok(Some((i, cards)))
        })
    })?;
    Ok(outcomes.into_iter().flatten().flatten().collect())
}

/// Take the next blank card from `source` and personalize it; any failure
/// rejects the card (with the reason), it does not stop the station.
fn issue_card(
    env: &StationEnv<'_>,
    batch: &Batch,
    source: &CardSource,
    h: &Holder,
    role: Role,
    key1: &[u8],
    opts: &IssueOptions,
) -> IssuedCard {
    let mut card = IssuedCard {
        holder: h.id.clone(),
        role,
        reader: String::new(),
        outcome: CardOutcome::Rejected {
            card_number: None,
            reason: String::new(),
        },
    };
    let mut reader = match source.blank_card(env, batch, &h.id, role) {
        Ok(r) => r,
        Err(e) => {
            card.outcome = CardOutcome::Rejected {
                card_number: None,
                reason: e.to_string(),
            };
            return card;
        }
    };
    card.reader = reader.name().to_string();
    let mut seen = None;
    let personalized = CardClient::open(reader.as_mut(), env.session.clone()).and_then(|mut c| {
        seen = c.card_number().ok();
        personalize(&mut c, h, role, key1, opts)
    });
    card.outcome = match personalized {
        Ok(card_number) => CardOutcome::Issued { card_number },
        // A wrong issuer fails every card of the batch alike: the batch
        // stops after this card instead of trying them all.
        Err(e @ (Error::IssuerRefused(_) | Error::Issue(IssueRefusal::NoIssuer))) => {
            batch.stop();
            CardOutcome::Rejected {
                card_number: seen,
                reason: format!("{e}; the batch stopped here, every other card would refuse it too"),
            }
        }
        Err(e) => CardOutcome::Rejected {
            card_number: seen,
            reason: e.to_string(),
        },
    };
    card
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(h: &[Holder]) -> Vec<(&str, &[u8], Option<&str>)> {
        h.iter()
            .map(|h| (h.id.as_str(), &h.pin[..], h.member_number.as_deref()))
            .collect()
    }

    #[test]
    fn a_spreadsheet_export_with_bom_crlf_and_quotes_parses() {
        let text = "\u{feff}holder,pin,member_number,expiry\r\n\
                    \"alice smith\",\"2468\",\"M-1,001\",2030-01\r\n\
                    # a comment line\r\n\
                    \r\n\
                    bob, 1357 ,M-1002,2031-12\r\n";
        let h = parse_holders(text, IssueProfile::Pair).unwrap();
        assert_eq!(
            ids(&h),
            [
                ("alice smith", &b"2468"[..], Some("M-1,001")),
                ("bob", &b"1357"[..], Some("M-1002"))
            ]
        );
    }

    #[test]
    fn every_bad_row_is_named_by_its_line() {
        let text = "holder,pin,member_number,expiry\n\
                    a,2468,M-1,2030-01\n\
                    b,12,M-2,2030-01\n\
                    c,2468,M-1,2030-01\n\
                    \"d,2468,M-4,2030-01\n";
        let Err(e) = parse_holders(text, IssueProfile::Pair) else {
            panic!("accepted")
        };
        let e = e.to_string();
        assert!(e.contains("line 3: holder 'b': the PIN must be 4 to 16 digits"), "{e}");
        assert!(
            e.contains("member number 'M-1' is also on line 2 (lines 2 and 4)"),
            "{e}"
        );
        assert!(e.contains("line 5: 1 fields, the header has 4"), "{e}");
        assert!(e.contains("3 bad row(s); nothing was issued"), "{e}");
    }
}
