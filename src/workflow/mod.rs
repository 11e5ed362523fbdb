//! Workflows: the operator's jobs, built from card-client calls, with every
//! response checked and every step recorded where the job says so.

pub mod authorize;
pub mod backup;
pub mod deposit;
pub mod duplicate;
pub mod escrow;
pub mod files;
pub mod holders;
pub mod issue;
pub mod keygroup;
pub mod purse;
pub mod replace;
pub mod restore_check;
pub mod station;
pub mod storing;
pub mod wallet;

use crate::card::{ApplicationRule, CardClient, CardStatus, KeyState};
use crate::error::Result;

/// What one job has already established on one card client, so that the
/// next workflow it runs on the same client does not ask the card again: a
/// PIN verified in the open secure session (held only while that session
/// stays open: a new session, the card's or another card's, verifies
/// again), and data the card reported that the job's own commands have not
/// changed since. A job started afresh (a resumed one in a new process)
/// begins with nothing and reads everything again. [`CardFacts::none`]
/// keeps nothing: every read goes to the card, as a standalone command's.
#[derive(Debug, Default)]
pub struct CardFacts {
    keep: bool,
    /// The secure session the PIN was verified in.
    pin_session: Option<u64>,
    status: Option<(CardStatus, KeyState)>,
    domain: Option<Option<cardvault_proto::domain::DomainRef>>,
    rules: Option<Vec<ApplicationRule>>,
}

impl CardFacts {
    /// Facts kept for the next workflow on the same client.
    pub fn kept() -> CardFacts {
        CardFacts {
            keep: true,
            ..Default::default()
        }
    }

    /// Whether facts are kept.
    pub fn keeps(&self) -> bool {
        self.keep
    }

    /// Nothing kept: every read and VERIFY goes to the card.
    pub fn none() -> CardFacts {
        CardFacts::default()
    }

    /// VERIFY the PIN, unless it was verified in the secure session open now.
    pub fn verify_pin(&mut self, card: &mut CardClient<'_>, pin: &[u8]) -> Result<()> {
        if self.keep && card.secure_session().is_some() && card.secure_session() == self.pin_session {
            return Ok(());
        }
        self.pin_session = None;
        card.verify_pin(pin)?;
        self.pin_session = card.secure_session().filter(|_| self.keep);
        Ok(())
    }

    /// Forget everything when the card's verified identity is not the card
    /// the facts were read from.
    fn same_card(&mut self, card: &CardClient<'_>) {
        let other = match (card.identity(), &self.status) {
            (Some(id), Some((s, _))) => id.subject.card_number != s.card_number,
            _ => false,
        };
        if other {
            *self = CardFacts {
                keep: self.keep,
                ..Default::default()
            };
        }
    }

    /// Card status and key state (one GET DATA), as last read.
    pub fn overview(&mut self, card: &mut CardClient<'_>) -> Result<(CardStatus, KeyState)> {
        self.same_card(card);
        remember(self.keep, &mut self.status, || card.overview())
    }

    /// The card number: from the status read, else GET DATA.
    pub fn card_number(&mut self, card: &mut CardClient<'_>) -> Result<String> {
        self.same_card(card);
        if let Some((s, _)) = self.status.as_ref().filter(|_| self.keep) {
            return Ok(s.card_number.clone());
        }
        card.card_number()
    }

    /// The key state changed (elements written, a key generated): `now` is
    /// what the card reports after it, or `None` to read it again.
    pub fn keys_changed(&mut self, now: Option<KeyState>) {
        match (now, self.status.as_mut()) {
            (Some(k), Some((_, keys))) => *keys = k,
            _ => self.status = None,
        }
    }

    /// GET DATA `DF32`, once.
    pub fn domain(&mut self, card: &mut CardClient<'_>) -> Result<Option<cardvault_proto::domain::DomainRef>> {
        self.same_card(card);
        remember(self.keep, &mut self.domain, || card.domain())
    }

    /// GET DATA `DF34` (storage rules), once.
    pub fn application_rules(&mut self, card: &mut CardClient<'_>) -> Result<Vec<ApplicationRule>> {
        self.same_card(card);
        remember(self.keep, &mut self.rules, || card.application_rules())
    }

    /// The card's certificate store: what the open secure session verified
    /// at its start when facts are kept, else GET DATA `BF21`.
    pub fn certificates(&mut self, card: &mut CardClient<'_>) -> Result<Vec<openssl::x509::X509>> {
        if self.keep {
            if let Some(id) = card.identity() {
                if let Ok(c) = cardvault_proto::cert::split_certificates(&id.chain_der) {
                    return Ok(c);
                }
            }
        }
        card.certificates()
    }
}

/// What `slot` holds when facts are kept, else `read()` (kept in `slot`
/// when facts are kept).
fn remember<T: Clone>(keep: bool, slot: &mut Option<T>, read: impl FnOnce() -> Result<T>) -> Result<T> {
    if let Some(v) = slot.as_ref().filter(|_| keep) {
        return Ok(v.clone());
    }
    let v = read()?;
    if keep {
        *slot = Some(v.clone());
    }
    Ok(v)
}
