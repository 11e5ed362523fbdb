//! Key groups, main keys and duplication (the Toshiba flow, FIG. 11/15/19).
//!
//! - The key group ("second key") is 1..8 write-once elements. Element 1 is
//!   written by the issuer (admin-authenticated), elements 2..n by the holder
//!   (PIN). Only a check value of the whole group is ever readable.
//! - The main key pair ("first key") is generated on the card, imported from
//!   a main card under the key group, or set by a key service.
//! - TAKE OUT KEY encrypts the private key under a key derived from the whole
//!   group and to the target card's certified ECKA key (ECDH with an
//!   ephemeral key), bound to source card, target card, group check value and
//!   counter. The target's certificate chain must verify under the issuer root
//!   installed on the main card.
//!   The first take-out fixes the one target a duplicate may go to; retries to
//!   that target work until the target's receipt confirms the import.

use crate::applet::{Applet, HandlerResult};
use crate::state::{HexBytes, KeyGroupState, KeyOrigin, MainKey};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::cert;
use cardvault_proto::crypto::{self, KeyPair};
use cardvault_proto::takeout::{self, parse_takeout};
use cardvault_proto::{sw, tag};
use openssl::x509::X509;
use zeroize::Zeroizing;

/// Roles that may hold an exportable main key.
fn is_main_role(role: &str) -> bool {
    matches!(role, "main" | "replacement")
}

impl KeyGroupState {
    pub fn complete(&self) -> bool {
        self.size > 0 && self.elements.iter().all(|e| e.0.len() == 32)
    }

    /// The group secret: HKDF over all elements in order.
    pub fn secret(&self) -> Option<Zeroizing<[u8; 32]>> {
        if !self.complete() {
            return None;
        }
        let mut ikm = Zeroizing::new(Vec::with_capacity(32 * self.elements.len()));
        for e in &self.elements {
            ikm.extend_from_slice(&e.0);
        }
        crypto::hkdf(&ikm, takeout::GROUP_SALT, &[self.size]).ok()
    }
}

impl Applet {
    fn require_pin(&self) -> Result<(), u16> {
        if self.session.pin_verified {
            Ok(())
        } else {
            Err(sw::SECURITY_STATUS_NOT_SATISFIED)
        }
    }

    pub(crate) fn require_admin(&self) -> Result<(), u16> {
        if self.session.admin_authenticated {
            Ok(())
        } else {
            Err(sw::SECURITY_STATUS_NOT_SATISFIED)
        }
    }

    fn require_issued(&self) -> Result<(), u16> {
        if self.state.issued {
            Ok(())
        } else {
            Err(sw::CONDITIONS_NOT_SATISFIED)
        }
    }

    /// Check value of the complete key group: HMAC-SHA256(group secret, label), 8 bytes.
    pub(crate) fn key_group_kcv(&self) -> Result<[u8; takeout::KCV_LEN], u16> {
        let secret = self.state.key_group.secret().ok_or(sw::REF_DATA_NOT_FOUND)?;
        let mac = crypto::hmac_sha256(&secret[..], &[takeout::KCV_LABEL]).map_err(|_| sw::UNKNOWN)?;
        let mut kcv = [0u8; takeout::KCV_LEN];
        kcv.copy_from_slice(&mac[..takeout::KCV_LEN]);
        Ok(kcv)
    }

    /// PUT DATA (issuer, before END PERSONALIZATION): role, member number,
    /// expiry, key group size, export policy.
    pub(crate) fn put_data(&mut self, c: &CommandApdu) -> HandlerResult {
        self.require_admin()?;
        if self.state.issued {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        match u16::from_be_bytes([c.p1, c.p2]) {
            cert::TAG_CERTIFICATE_STORE => return self.store_registration_certificate(c),
            cert::TAG_TRUST_ANCHOR => return self.install_trust_anchor(c),
            tag::STORING_CERTIFICATE => return self.store_signing_certificate(c),
            tag::ISSUER_REGISTRAR_ROOT | tag::DATA_REGISTRAR_ROOT => return self.install_registrar_root(c),
            _ => {}
        }
        let text = |d: &[u8]| -> Result<String, u16> {
            let s = std::str::from_utf8(d).map_err(|_| sw::WRONG_DATA)?;
            if s.is_empty() || s.len() > 32 || s.chars().any(|ch| ch.is_control()) {
                return Err(sw::WRONG_DATA);
            }
            Ok(s.to_string())
        };
        match u16::from_be_bytes([c.p1, c.p2]) {
            tag::ROLE => {
                let role = text(&c.data)?;
                if !matches!(role.as_str(), "main" | "backup" | "replacement" | "issuer") {
                    return Err(sw::WRONG_DATA);
                }
                self.state.role = role;
            }
            tag::MEMBER_NUMBER => self.state.member_number = text(&c.data)?,
            tag::EXPIRY => self.state.expiry = text(&c.data)?,
            tag::KEY_GROUP_SIZE => {
                let [n] = c.data[..] else { return Err(sw::WRONG_LENGTH) };
                if !(1..=8).contains(&n) {
                    return Err(sw::WRONG_DATA);
                }
                // The size the group already has is accepted as it is (an
                // issuance retried after the card was pulled); another size
                // only while no element is written.
                if n == self.state.key_group.size {
                    return Ok(vec![]);
                }
                if self.state.key_group.elements.iter().any(|e| !e.0.is_empty()) {
                    // The same size again keeps the written elements (an
                    // interrupted issuance is retried); another size is refused.
                    if n == self.state.key_group.size {
                        return Ok(vec![]);
                    }
                    return Err(sw::CONDITIONS_NOT_SATISFIED);
                }
                self.state.key_group = KeyGroupState {
                    size: n,
                    elements: vec![HexBytes::default(); n as usize],
                };
            }
            tag::EXPORT_POLICY => {
                let [p] = c.data[..] else { return Err(sw::WRONG_LENGTH) };
                if p & !1 != 0 {
                    return Err(sw::WRONG_DATA);
                }
                self.state.export.no_export_after_backup = p & 1 != 0;
            }
            _ => return Err(sw::REF_DATA_NOT_FOUND),
        }
        self.mark_dirty();
        Ok(vec![])
    }

    /// END PERSONALIZATION: freezes issuer data. Needs a role, key element 1
    /// and a registration certificate naming that role (the factory
    /// certificate, role `blank`, must have been replaced), and a certified
    /// signing key (PUT DATA `DF35`).
    pub(crate) fn end_personalization(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        self.require_admin()?;
        if self.state.issued {
            return Ok(vec![]);
        }
        let kg = &self.state.key_group;
        if self.state.role == "blank" || kg.elements.first().map(|e| e.0.is_empty()).unwrap_or(true) {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        if self.certified_role().as_deref() != Some(self.state.role.as_str()) {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        // Every issued card can sign (storing requests, DESTROY KEY receipts).
        if self.state.storing.private_key.is_empty() || self.state.storing.certificate.is_empty() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        self.state.issued = true;
        self.mark_dirty();
        Ok(vec![])
    }

    /// WRITE KEY ELEMENT P1 = element number (1..n), data = 32 bytes.
    /// Write-once; writing the same value again succeeds (retry after an interruption).
    /// Once the group is complete the answer is its check value (8 bytes), which
    /// saves the terminal a GET DATA when it compares two cards' groups.
    pub(crate) fn write_key_element(&mut self, c: &CommandApdu) -> HandlerResult {
        let idx = c.p1 as usize;
        if c.p2 != 0 || idx == 0 || idx > self.state.key_group.size as usize {
            return Err(sw::WRONG_P1P2);
        }
        if c.data.len() != 32 {
            return Err(sw::WRONG_LENGTH);
        }
        if idx == 1 {
            self.require_admin()?;
        } else {
            self.require_issued()?;
            if !self.session.admin_authenticated {
                self.require_pin()?;
            }
        }
        let slot = &mut self.state.key_group.elements[idx - 1];
        if !slot.0.is_empty() {
            if !openssl::memcmp::eq(&slot.0, &c.data) {
                return Err(sw::CONDITIONS_NOT_SATISFIED);
            }
        } else {
            slot.0 = c.data.clone();
            self.mark_dirty();
        }
        Ok(self.key_group_kcv().map(|k| k.to_vec()).unwrap_or_default())
    }

    /// RESET KEY GROUP: clears elements 2..n and destroys the main keys with
    /// them, so a known group can never be slipped under an existing key.
    pub(crate) fn reset_key_group(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        self.require_issued()?;
        self.require_pin()?;
        for e in self.state.key_group.elements.iter_mut().skip(1) {
            zeroize::Zeroize::zeroize(&mut e.0);
            e.0.clear();
        }
        self.state.main_key = None;
        let policy = self.state.export.no_export_after_backup;
        self.state.export = crate::state::ExportState {
            no_export_after_backup: policy,
            ..Default::default()
        };
        self.mark_dirty();
        Ok(vec![])
    }

    /// GENERATE KEY PAIR: only on a main card with a complete group and no key.
    pub(crate) fn generate_key_pair(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        self.require_issued()?;
        self.require_pin()?;
        if !is_main_role(&self.state.role) || !self.state.key_group.complete() || self.state.main_key.is_some() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let kp = KeyPair::generate().map_err(|_| sw::UNKNOWN)?;
        let public = kp.public_bytes();
        self.state.main_key = Some(MainKey {
            private: kp.private_bytes().to_vec(),
            public: public.clone(),
            origin: KeyOrigin::Generated,
            source_card: String::new(),
            public_readable: true,
        });
        self.mark_dirty();
        Ok(public)
    }

    fn export_kek(&self, ecdh_secret: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, u16> {
        let secret = self.state.key_group.secret().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        takeout::export_kek(&secret[..], ecdh_secret, aad).map_err(|_| sw::UNKNOWN)
    }

    /// The take-out target named by a certificate chain (TAKE OUT KEY data):
    /// the chain must verify under the issuer root installed on this card,
    /// and its leaf must certify a key agreement key of a card whose
    /// certificate may name a take-out target (`backup`, or the factory
    /// certificate `blank` of a card issued since).
    /// Returns the target's card number and its certified ECKA public key.
    fn take_out_target(&self, data: &[u8]) -> Result<(String, Vec<u8>), u16> {
        let chain = cert::split_certificates(data).map_err(|_| sw::WRONG_DATA)?;
        if chain.is_empty() || chain.len() > takeout::MAX_TARGET_CHAIN {
            return Err(sw::WRONG_LENGTH);
        }
        let anchor = X509::from_der(&self.state.trust_anchor).map_err(|_| sw::REF_DATA_NOT_USABLE)?;
        let (leaf, key) = cert::verify_ecka_chain(&[anchor], &chain).map_err(|_| sw::REF_DATA_NOT_USABLE)?;
        let subject = cert::card_subject(&leaf).ok_or(sw::REF_DATA_NOT_USABLE)?;
        if !takeout::TARGET_ROLES.contains(&subject.role.as_str())
            || subject.card_number.is_empty()
            || subject.card_number.len() > 32
        {
            return Err(sw::REF_DATA_NOT_USABLE);
        }
        Ok((subject.card_number, key))
    }

    fn receipt(&self, source: &str, target: &str, counter: u32, public: &[u8]) -> Result<[u8; 32], u16> {
        let secret = self.state.key_group.secret().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let kcv = self.key_group_kcv()?;
        crypto::hmac_sha256(
            &secret[..],
            &[
                takeout::RECEIPT_LABEL,
                &[source.len() as u8],
                source.as_bytes(),
                &[target.len() as u8],
                target.as_bytes(),
                &counter.to_be_bytes(),
                &kcv,
                &crypto::sha256(public),
            ],
        )
        .map_err(|_| sw::UNKNOWN)
    }

    /// TAKE OUT KEY, data = the target card's certificate chain (DER
    /// certificates, leaf last). Returns the take-out blob, sealed to the key
    /// group and to the target's certified ECKA key.
    pub(crate) fn take_out_key(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if c.data.is_empty() {
            return Err(sw::WRONG_LENGTH);
        }
        self.require_issued()?;
        self.require_pin()?;
        let key = self.state.main_key.as_ref().ok_or(sw::REF_DATA_NOT_FOUND)?;
        // A backup card never exports; nor does any card holding an imported key.
        if !is_main_role(&self.state.role) || key.origin == KeyOrigin::Imported {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let (target, target_key) = self.take_out_target(&c.data)?;
        if target == self.state.card_number {
            return Err(sw::WRONG_DATA);
        }
        let e = &self.state.export;
        let allowed = if e.confirmed {
            !e.no_export_after_backup && e.target == target
        } else {
            e.target.is_empty() || e.target == target
        };
        if !allowed {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let kcv = self.key_group_kcv().map_err(|_| sw::CONDITIONS_NOT_SATISFIED)?;
        let counter = e.counter.checked_add(1).ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let source = self.state.card_number.clone();
        let mut blob = takeout::TakeOutInfo {
            source,
            target: target.clone(),
            kcv: kcv.to_vec(),
            counter,
        }
        .encode_aad();
        let ephemeral = KeyPair::generate().map_err(|_| sw::UNKNOWN)?;
        let z = ephemeral.ecdh(&target_key).map_err(|_| sw::UNKNOWN)?;
        blob.extend_from_slice(&ephemeral.public_bytes());
        let kek = self.export_kek(&z, &blob)?;
        let nonce = crypto::random::<{ crypto::GCM_NONCE_LEN }>();
        let mut plain = Zeroizing::new(key.private.clone());
        plain.extend_from_slice(&key.public);
        let sealed = crypto::seal(&kek, &nonce, &blob, &plain).map_err(|_| sw::UNKNOWN)?;
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        // Bind the target and count the take-out before the blob leaves the card.
        self.state.export.target = target;
        self.state.export.counter = counter;
        self.mark_dirty();
        Ok(blob)
    }

    /// IMPORT KEY, data = take-out blob; P1 = 01 also makes the encryption key
    /// readable (FIG. 26/27 variant). Returns the receipt for the main card.
    pub(crate) fn import_key(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 > 1 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        self.require_issued()?;
        self.require_pin()?;
        if self.state.role != "backup" || !self.state.key_group.complete() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let t = parse_takeout(&c.data).ok_or(sw::WRONG_DATA)?;
        if t.target != self.state.card_number || t.source == self.state.card_number {
            return Err(sw::WRONG_DATA);
        }
        // A take-out this card has destroyed (DESTROY KEY) never comes back.
        let d = &self.state.destroyed;
        if t.source == d.source && t.counter <= d.counter {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let kcv = self.key_group_kcv()?;
        if !openssl::memcmp::eq(t.kcv, &kcv) {
            // A different key group: nothing is stored.
            return Err(sw::REF_DATA_NOT_USABLE);
        }
        // Only the certified card holds the ECKA key the blob is wrapped to.
        let ecka = self.state.ecka_key().ok_or(sw::WRONG_DATA)?;
        let z = ecka.ecdh(t.ephemeral).map_err(|_| sw::WRONG_DATA)?;
        let kek = self.export_kek(&z, t.aad)?;
        let plain = crypto::open(&kek, t.nonce, t.aad, t.sealed).map_err(|_| sw::WRONG_DATA)?;
        let (d, q) = plain.split_at(crypto::PRIVATE_KEY_LEN);
        let kp = KeyPair::from_private(d).map_err(|_| sw::WRONG_DATA)?;
        if kp.public_bytes() != q {
            return Err(sw::WRONG_DATA);
        }
        if let Some(existing) = &self.state.main_key {
            // A retry after an interrupted answer: same key, same answer.
            if !(existing.origin == KeyOrigin::Imported && openssl::memcmp::eq(&existing.private, d)) {
                return Err(sw::CONDITIONS_NOT_SATISFIED);
            }
        } else {
            self.state.main_key = Some(MainKey {
                private: d.to_vec(),
                public: q.to_vec(),
                origin: KeyOrigin::Imported,
                source_card: t.source.to_string(),
                public_readable: c.p1 == 1,
            });
            self.mark_dirty();
        }
        if c.p1 == 1 {
            if let Some(k) = self.state.main_key.as_mut().filter(|k| !k.public_readable) {
                k.public_readable = true;
                self.mark_dirty();
            }
        }
        Ok(takeout::Receipt {
            counter: t.counter,
            mac: self.receipt(t.source, t.target, t.counter, q)?,
        }
        .encode())
    }

    /// CONFIRM DUPLICATE, data = counter (4) || receipt (32) from IMPORT KEY.
    pub(crate) fn confirm_duplicate(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let receipt = takeout::Receipt::parse(&c.data).ok_or(sw::WRONG_LENGTH)?;
        self.require_pin()?;
        let key = self.state.main_key.as_ref().ok_or(sw::REF_DATA_NOT_FOUND)?;
        let e = &self.state.export;
        if e.target.is_empty() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let counter = receipt.counter;
        if counter == 0 || counter > e.counter {
            return Err(sw::WRONG_DATA);
        }
        let expected = self.receipt(&self.state.card_number, &e.target, counter, &key.public)?;
        if !openssl::memcmp::eq(&expected, &receipt.mac) {
            return Err(sw::WRONG_DATA);
        }
        if !self.state.export.confirmed {
            self.state.export.confirmed = true;
            self.mark_dirty();
        }
        Ok(vec![])
    }

    /// DESTROY KEY (backup card), data = counter (4) || source card number:
    /// destroy the key imported from `source` (if any), refuse that source's
    /// take-outs numbered `counter` or lower from now on, and answer
    /// counter (4) || signature (64) for the source card's RELEASE DUPLICATE:
    /// this card's signing key signs `takeout::destroy_message` (source,
    /// this card, counter, the key group's check value).
    pub(crate) fn destroy_key(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if c.data.len() < 5 || c.data.len() > 4 + 32 {
            return Err(sw::WRONG_LENGTH);
        }
        let counter = u32::from_be_bytes(c.data[..4].try_into().expect("4 bytes"));
        let source = std::str::from_utf8(&c.data[4..])
            .map_err(|_| sw::WRONG_DATA)?
            .to_string();
        self.require_issued()?;
        self.require_pin()?;
        if self.state.role != "backup" || !self.state.key_group.complete() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        if counter == 0 || source == self.state.card_number {
            return Err(sw::WRONG_DATA);
        }
        // A card that cannot sign the receipt destroys nothing.
        let (key, _) = self.state.storing.signing_key().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let kcv = self.key_group_kcv()?;
        if self
            .state
            .main_key
            .as_ref()
            .is_some_and(|k| k.origin == KeyOrigin::Imported && k.source_card == source)
        {
            self.state.main_key = None;
            self.mark_dirty();
        }
        let d = &self.state.destroyed;
        if d.source != source || d.counter < counter {
            self.state.destroyed = crate::state::DestroyedImports {
                source: source.clone(),
                counter,
            };
            self.mark_dirty();
        }
        let msg = takeout::destroy_message(&source, &self.state.card_number, counter, &kcv);
        let signature = crypto::sign_p256(&key, &msg).map_err(|_| sw::UNKNOWN)?;
        Ok(takeout::DestroyReceipt {
            counter,
            signature: signature.try_into().map_err(|_| sw::UNKNOWN)?,
        }
        .encode())
    }

    /// RELEASE DUPLICATE (issuer), data = none, or a DESTROY KEY receipt
    /// (counter (4) || signature (64)) followed by the signing certificate of
    /// the card that signed it. Once a take-out has left the card (a target
    /// is bound) the target is forgotten only on that target's signed proof
    /// that it destroyed the key, for the latest take-out: the certificate
    /// chains to the issuer root installed here and names the bound target
    /// (a backup card), and its key signed this card's number, the target's,
    /// the counter and this card's key group check value. A backup card that
    /// imported the key so keeps no copy beside a second duplicate. Without
    /// the receipt (a lost backup card), the holder rotates the main key
    /// (RESET KEY GROUP, which clears the export state with the key).
    pub(crate) fn release_duplicate(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let proof = match c.data.len() {
            0 => None,
            _ => Some(takeout::parse_release(&c.data).ok_or(sw::WRONG_LENGTH)?),
        };
        self.require_admin()?;
        let e = &self.state.export;
        if e.target.is_empty() {
            return Ok(vec![]);
        }
        let Some((receipt, certificate)) = proof else {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        };
        if receipt.counter != e.counter {
            return Err(sw::WRONG_DATA);
        }
        let anchor = X509::from_der(&self.state.trust_anchor).map_err(|_| sw::REF_DATA_NOT_USABLE)?;
        let signer = cardvault_proto::storing::verify_card_signing_key(&[anchor], certificate)
            .map_err(|_| sw::REF_DATA_NOT_USABLE)?;
        if signer.card_number != e.target || !takeout::TARGET_ROLES.contains(&signer.role.as_str()) {
            return Err(sw::WRONG_DATA);
        }
        let kcv = self.key_group_kcv().map_err(|_| sw::CONDITIONS_NOT_SATISFIED)?;
        let msg = takeout::destroy_message(&self.state.card_number, &e.target, e.counter, &kcv);
        if !crypto::verify_p256(&signer.public_key, &msg, &receipt.signature).unwrap_or(false) {
            return Err(sw::WRONG_DATA);
        }
        self.state.export.target.clear();
        self.state.export.confirmed = false;
        self.mark_dirty();
        Ok(vec![])
    }

    fn split_wrapped<'a>(&self, data: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), u16> {
        let (&n, rest) = data.split_first().ok_or(sw::WRONG_LENGTH)?;
        let n = n as usize;
        if rest.len() != n + crypto::WRAPPED_KEY_LEN {
            return Err(sw::WRONG_LENGTH);
        }
        Ok(rest.split_at(n))
    }

    fn main_keypair(&self) -> Result<KeyPair, u16> {
        let k = self.state.main_key.as_ref().ok_or(sw::REF_DATA_NOT_FOUND)?;
        KeyPair::from_private(&k.private).map_err(|_| sw::UNKNOWN)
    }

    /// UNWRAP FILE KEY, data = len(aad) || aad || wrapped key (125). Returns the file key.
    pub(crate) fn unwrap_file_key(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let (aad, wrapped) = self.split_wrapped(&c.data)?;
        self.require_pin()?;
        let kp = self.main_keypair()?;
        let key = crypto::unwrap_key(&kp, wrapped, aad).map_err(|_| sw::WRONG_DATA)?;
        Ok(key.to_vec())
    }

    /// SET PEER KEY, data = 65-byte P-256 public key of a peer.
    pub(crate) fn set_peer_key(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        self.require_pin()?;
        crypto::public_key(&c.data).map_err(|_| sw::WRONG_DATA)?;
        self.state.peer_key = c.data.clone();
        self.mark_dirty();
        Ok(vec![])
    }

    /// REWRAP TO PEER (FIG. 5): unwrap with the card's key and wrap the same
    /// file key to the peer's key, with the same associated data.
    pub(crate) fn rewrap_to_peer(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let (aad, wrapped) = self.split_wrapped(&c.data)?;
        self.require_pin()?;
        if self.state.peer_key.is_empty() {
            return Err(sw::REF_DATA_NOT_FOUND);
        }
        let kp = self.main_keypair()?;
        let key = crypto::unwrap_key(&kp, wrapped, aad).map_err(|_| sw::WRONG_DATA)?;
        crypto::wrap_key(&self.state.peer_key, &key, aad).map_err(|_| sw::UNKNOWN)
    }

    /// GET TRANSPORT KEY (key service variant, issuer session): a fresh
    /// ephemeral key pair for this session. Returns its public key (65). The
    /// answer travels under the SCP11a session, whose receipt proved the
    /// card's certified key and whose R-MAC authenticates every answer, so
    /// the key service knows the key really comes from this card.
    pub(crate) fn get_transport_key(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        self.require_admin()?;
        let kp = KeyPair::generate().map_err(|_| sw::UNKNOWN)?;
        let out = kp.public_bytes();
        self.session.transport_key = Some(kp);
        Ok(out)
    }

    /// SET MAIN KEY (FIG. 28/29): data = the private scalar wrapped to the
    /// session transport key with aad = label || card number. Admin only.
    pub(crate) fn set_main_key(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if c.data.len() != crypto::WRAPPED_KEY_LEN {
            return Err(sw::WRONG_LENGTH);
        }
        self.require_admin()?;
        if !is_main_role(&self.state.role) || self.state.main_key.is_some() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let tk = self.session.transport_key.take().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let mut aad = takeout::KEY_SERVICE_LABEL.to_vec();
        aad.extend_from_slice(self.state.card_number.as_bytes());
        let d = crypto::unwrap_key(&tk, &c.data, &aad).map_err(|_| sw::WRONG_DATA)?;
        let kp = KeyPair::from_private(&d[..]).map_err(|_| sw::WRONG_DATA)?;
        let public = kp.public_bytes();
        self.state.main_key = Some(MainKey {
            private: kp.private_bytes().to_vec(),
            public: public.clone(),
            origin: KeyOrigin::KeyService,
            source_card: String::new(),
            public_readable: true,
        });
        self.mark_dirty();
        Ok(public)
    }
}
