//! LOAD DOMAIN KEY: the issuer domain's card-common key enters the card at
//! issuance, from the key ceremony (`cardvault issue --domain DIR`), under an
//! SCP11a issuer session only, once, before END PERSONALIZATION. The card
//! keeps the domain id and generation with it; its backups name them, and it
//! opens only backups of its own domain generation.

use crate::applet::{Applet, HandlerResult};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::domain::{DomainKeyLoad, LOAD_DATA_LEN};
use cardvault_proto::scp11::Variant;
use cardvault_proto::sw;

impl Applet {
    /// LOAD DOMAIN KEY (CLA 80 INS EE P1P2 0000): data = domain id (16) ||
    /// generation (4) || key (32) || check value (8).
    pub(crate) fn load_domain_key(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        // The issuer's SCP11a session, and this command under it: never the
        // shared admin key, never in clear.
        let scp11a = matches!(&self.session.secure, Some(s) if s.variant == Variant::Scp11a);
        if !scp11a || !self.protected_command() || !self.session.admin_authenticated {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if c.data.len() != LOAD_DATA_LEN {
            return Err(sw::WRONG_LENGTH);
        }
        // Only before issuance ends, and one key per card: a card never
        // changes domain (a new generation means new cards).
        if self.state.issued {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let load = DomainKeyLoad::parse(&c.data).ok_or(sw::WRONG_DATA)?;
        if !load.domain.is_some() || !load.check_value_matches() {
            return Err(sw::WRONG_DATA);
        }
        if self.state.has_domain_key() {
            // The same key again succeeds and changes nothing (an issuance
            // interrupted after this command is retried); another is refused.
            let same = self.state.domain() == load.domain && openssl::memcmp::eq(&self.state.common_key, &load.key[..]);
            return if same {
                Ok(vec![])
            } else {
                Err(sw::CONDITIONS_NOT_SATISFIED)
            };
        }
        self.state.common_key = load.key.to_vec();
        self.state.domain_id = load.domain.id.to_vec();
        self.state.domain_generation = load.domain.generation;
        self.mark_dirty();
        Ok(vec![])
    }
}
