//! Encrypted page backup and restore (the Hitachi flow), with the gaps of the
//! patent closed: authenticated encryption bound to card, backup and record;
//! a trailer MAC that detects truncation; a card-side counter that never
//! repeats; refusal to roll back; other-card restores only with an issuer
//! authorization naming the target card and a fresh card challenge; pages
//! staged in RAM until RESTORE COMPLETE commits them in one state write.
//!
//! Byte layouts are in docs/FORMATS.md ("Page backups").

use crate::applet::{Applet, HandlerResult};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::backup::{
    self as bk, authorization_message, lv, parse_header, AuthorizedRestore, AuthorizedRestoreError, BackupKind,
    HeaderInfo, Trailer,
};
use cardvault_proto::crypto;
use cardvault_proto::domain::DomainRef;
use cardvault_proto::load::{self, LoadAuthorization};
use cardvault_proto::sw;
use openssl::sha::Sha256;
use std::collections::BTreeMap;
use std::ops::Range;
use zeroize::Zeroizing;

/// A backup being read out.
pub struct BackupSession {
    counter: u32,
    kind: u8,
    pages: Vec<u16>,
    cursor: usize,
    next_record: u32,
    key: Zeroizing<[u8; 32]>,
    header_hash: [u8; 32],
    records_hash: Sha256,
    block: usize,
    finished: bool,
}

impl std::fmt::Debug for BackupSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackupSession(counter {})", self.counter)
    }
}

/// One backup of a restore chain, being received.
struct Incoming {
    card: String,
    counter: u32,
    pages_declared: u16,
    pages_received: u16,
    key: Zeroizing<[u8; 32]>,
    header_hash: [u8; 32],
    records_hash: Sha256,
    next_record: u32,
    trailer_ok: bool,
}

/// A restore in progress: pages staged, nothing written yet.
pub struct RestoreSession {
    /// Issuer override of the rollback check (admin session at RESTORE).
    override_rollback: bool,
    other_card: bool,
    /// Counter the issuer authorized (other-card restores).
    authorized_counter: Option<u32>,
    /// Chain hash the issuer's signature covers (other-card restores).
    authorized_chain: Option<[u8; 32]>,
    /// SHA-256 of each header received, in order.
    header_hashes: Vec<[u8; 32]>,
    /// The restore challenge this restore uses: taken at RESTORE P1 01, or
    /// at the first provider agreement of a same-card restore.
    challenge: Option<Vec<u8>>,
    /// Applications whose provider agreed (RESTORE DATA P1 03) to this very
    /// chain: RESTORE COMPLETE writes their pages.
    agreed: Vec<u8>,
    chain: Vec<u32>,
    current: Incoming,
    staged: BTreeMap<u16, Vec<u8>>,
}

/// A restore in progress as [`crate::applet::SessionView`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreView {
    /// Counter of the backup being received (the last of the chain so far).
    pub counter: u32,
    pub other_card: bool,
    /// The issuer override of the rollback check was given at RESTORE.
    pub override_rollback: bool,
}

impl RestoreSession {
    pub(crate) fn view(&self) -> RestoreView {
        RestoreView {
            counter: self.current.counter,
            other_card: self.other_card,
            override_rollback: self.override_rollback,
        }
    }
}

impl std::fmt::Debug for RestoreSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RestoreSession({} pages staged)", self.staged.len())
    }
}

fn backup_key(unique: &[u8], card: &str, counter: u32) -> Result<Zeroizing<[u8; 32]>, u16> {
    let mut info = lv(card);
    info.extend_from_slice(&counter.to_be_bytes());
    crypto::hkdf(unique, bk::BACKUP_SALT, &info).map_err(|_| sw::UNKNOWN)
}

/// The wrapped unique key is bound to the card, the backup and the domain
/// generation whose key wrapped it.
fn unique_wrap_aad(card: &str, counter: u32, domain: &DomainRef) -> Vec<u8> {
    let mut aad = bk::UNIQUE_WRAP_LABEL.to_vec();
    aad.extend_from_slice(&lv(card));
    aad.extend_from_slice(&counter.to_be_bytes());
    aad.extend_from_slice(&domain.encode());
    aad
}

fn record_aad(card: &str, counter: u32, index: u32) -> Vec<u8> {
    let mut aad = bk::RECORD_LABEL.to_vec();
    aad.extend_from_slice(&lv(card));
    aad.extend_from_slice(&counter.to_be_bytes());
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

fn record_nonce(index: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[8..].copy_from_slice(&index.to_be_bytes());
    n
}

fn trailer_mac(key: &[u8; 32], header_hash: &[u8; 32], count: u32, records_hash: [u8; 32]) -> Result<[u8; 32], u16> {
    crypto::hmac_sha256(
        key,
        &[bk::TRAILER_LABEL, header_hash, &count.to_be_bytes(), &records_hash],
    )
    .map_err(|_| sw::UNKNOWN)
}

fn hash_record(h: &mut Sha256, record: &[u8]) {
    h.update(&(record.len() as u32).to_be_bytes());
    h.update(record);
}

impl Applet {
    fn page_bytes(&self, page: u16) -> Range<usize> {
        let s = self.state.page_size as usize;
        page as usize * s..(page as usize + 1) * s
    }

    /// Set the change flag of every page a byte range touches.
    pub(crate) fn flag_changed(&mut self, r: &Range<usize>) {
        if r.is_empty() {
            return;
        }
        let s = self.state.page_size as usize;
        for p in r.start / s..=(r.end - 1) / s {
            self.state.change_flags[p / 8] |= 1 << (p % 8);
        }
    }

    fn changed_pages(&self) -> Vec<u16> {
        (0..self.state.page_count)
            .filter(|p| self.state.change_flags[*p as usize / 8] & (1 << (p % 8)) != 0)
            .collect()
    }

    /// FIG. 20: a value application restored from a backup resets its value
    /// before its next use. Called by every command that touches application data.
    pub(crate) fn reset_restored_values(&mut self, touched: &Range<usize>) {
        let s = self.state.page_size as usize;
        let hits: Vec<usize> = self
            .state
            .applications
            .iter()
            .enumerate()
            .filter(|(_, a)| a.value && a.restored)
            .filter(|(_, a)| {
                let r = a.first_page as usize * s..(a.first_page + a.page_count) as usize * s;
                r.start < touched.end && touched.start < r.end
            })
            .map(|(i, _)| i)
            .collect();
        for i in hits {
            let a = &mut self.state.applications[i];
            a.restored = false;
            let r = a.first_page as usize * s..a.first_page as usize * s + 4;
            self.state.memory[r.clone()].fill(0);
            self.flag_changed(&r);
            self.mark_dirty();
        }
    }

    /// BACKUP: P1 = 00 full, 01 differential, 02 differential when a base
    /// exists else full; data = block size (2) || time (8).
    /// Returns header length (2) || header || record 0 [|| trailer].
    pub(crate) fn backup(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 > bk::BACKUP_AUTO || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if c.data.len() != 10 {
            return Err(sw::WRONG_LENGTH);
        }
        let block = u16::from_be_bytes([c.data[0], c.data[1]]) as usize;
        if !(bk::MIN_BLOCK..=bk::MAX_BLOCK).contains(&block) {
            return Err(sw::WRONG_DATA);
        }
        let time = &c.data[2..10];
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        // No card-common key (a card issued without a domain): no backup.
        if self.session.restore.is_some() || !self.state.has_domain_key() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let base = self.state.backup.base;
        let kind = match c.p1 {
            bk::BACKUP_AUTO if base == 0 => bk::TYPE_FULL,
            bk::BACKUP_AUTO => bk::TYPE_DIFFERENTIAL,
            k => k,
        };
        if kind == bk::TYPE_DIFFERENTIAL && base == 0 {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let pages: Vec<u16> = match kind {
            bk::TYPE_FULL => (0..self.state.page_count).collect(),
            _ => self.changed_pages(),
        };
        // A new counter for every backup, committed before any data leaves.
        let counter = self
            .state
            .backup
            .issued
            .checked_add(1)
            .ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        self.state.backup.issued = counter;
        self.mark_dirty();

        let card = self.state.card_number.clone();
        let domain = self.state.domain();
        let key = backup_key(&self.state.unique_key, &card, counter)?;
        let mut ck = [0u8; 32];
        ck.copy_from_slice(&self.state.common_key);
        let nonce = crypto::random::<12>();
        let mut wrapped = nonce.to_vec();
        wrapped.extend(
            crypto::seal(
                &ck,
                &nonce,
                &unique_wrap_aad(&card, counter, &domain),
                &self.state.unique_key,
            )
            .map_err(|_| sw::UNKNOWN)?,
        );
        zeroize::Zeroize::zeroize(&mut ck);
        let mut info = HeaderInfo::new(
            BackupKind::from_byte(kind).ok_or(sw::UNKNOWN)?,
            counter,
            if kind == bk::TYPE_FULL { 0 } else { base },
            self.state.page_size,
            self.state.page_count,
            pages.len() as u16,
            &card,
            domain,
            wrapped,
        );
        let prefix = info.encode_prefix();
        let mut control = vec![bk::VERSION];
        control.extend_from_slice(&lv(&card));
        control.extend_from_slice(&prefix[1..16]); // kind, counter, base, geometry, pages
        control.extend_from_slice(time);
        let mut aad = bk::CONTROL_LABEL.to_vec();
        aad.extend_from_slice(&prefix);
        info.control = crypto::seal(&key, &[0xFF; 12], &aad, &control).map_err(|_| sw::UNKNOWN)?;
        let header = info.encode();
        if 2 + header.len() + bk::TRAILER_LEN + 18 + 4 + self.state.page_size as usize > block {
            return Err(sw::WRONG_DATA);
        }
        let mut out = (header.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&header);
        self.session.backup = Some(BackupSession {
            counter,
            kind,
            pages,
            cursor: 0,
            next_record: 0,
            key,
            header_hash: crypto::sha256(&header),
            records_hash: Sha256::new(),
            block,
            finished: false,
        });
        let budget = block - out.len();
        self.next_record(budget, &mut out)?;
        Ok(out)
    }

    /// Seal the next record into `out` (at most `budget` bytes incl. a trailer).
    fn next_record(&mut self, budget: usize, out: &mut Vec<u8>) -> Result<(), u16> {
        let ps = self.state.page_size as usize;
        let card = self.state.card_number.clone();
        let b = self.session.backup.as_mut().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        if b.finished {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        // Room for: tag (16), run count (2), trailer; then runs of 4 + n pages.
        let mut room = budget - 16 - 2 - bk::TRAILER_LEN;
        let mut plain = Zeroizing::new(vec![0u8, 0u8]);
        let mut runs = 0u16;
        while b.cursor < b.pages.len() && room >= 4 + ps {
            let first = b.pages[b.cursor];
            let mut n = 0usize;
            while b.cursor + n < b.pages.len() && b.pages[b.cursor + n] == first + n as u16 && room >= 4 + (n + 1) * ps
            {
                n += 1;
            }
            plain.extend_from_slice(&first.to_be_bytes());
            plain.extend_from_slice(&(n as u16).to_be_bytes());
            let start = first as usize * ps;
            plain.extend_from_slice(&self.state.memory[start..start + n * ps]);
            b.cursor += n;
            room -= 4 + n * ps;
            runs += 1;
        }
        plain[..2].copy_from_slice(&runs.to_be_bytes());
        let index = b.next_record;
        let record = crypto::seal(
            &b.key,
            &record_nonce(index),
            &record_aad(&card, b.counter, index),
            &plain,
        )
        .map_err(|_| sw::UNKNOWN)?;
        hash_record(&mut b.records_hash, &record);
        b.next_record += 1;
        out.extend_from_slice(&record);
        if b.cursor >= b.pages.len() {
            b.finished = true;
            let count = b.next_record;
            let mac = trailer_mac(&b.key, &b.header_hash, count, b.records_hash.clone().finish())?;
            out.extend_from_slice(
                &Trailer {
                    record_count: count,
                    mac,
                }
                .encode(),
            );
        } else {
            self.set_final_sw(bk::SW_MORE_BLOCKS);
        }
        Ok(())
    }

    /// BACKUP DATA: P1P2 = record index (1, 2, ...). Returns the record [|| trailer].
    pub(crate) fn backup_data(&mut self, c: &CommandApdu) -> HandlerResult {
        if !c.data.is_empty() {
            return Err(sw::WRONG_LENGTH);
        }
        let b = self.session.backup.as_ref().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        if u16::from_be_bytes([c.p1, c.p2]) as u32 != b.next_record || b.finished {
            return Err(sw::WRONG_P1P2);
        }
        let block = b.block;
        let mut out = Vec::with_capacity(block);
        self.next_record(block, &mut out)?;
        Ok(out)
    }

    /// BACKUP COMPLETE: data = counter (4). Sent only once the vault holds the
    /// whole backup; clears the change flags and makes this backup the base.
    pub(crate) fn backup_complete(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let [a, b2, c2, d] = c.data[..] else {
            return Err(sw::WRONG_LENGTH);
        };
        let counter = u32::from_be_bytes([a, b2, c2, d]);
        let b = self.session.backup.as_ref().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        if !b.finished || b.counter != counter {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let (kind, pages) = (b.kind, b.pages.clone());
        self.session.backup = None;
        match kind {
            bk::TYPE_FULL => self.state.change_flags.fill(0),
            _ => {
                for p in pages {
                    self.state.change_flags[p as usize / 8] &= !(1 << (p % 8));
                }
            }
        }
        self.state.backup.base = counter;
        self.state.backup.newest_seen = self.state.backup.newest_seen.max(counter);
        self.mark_dirty();
        Ok(vec![])
    }

    /// GET RESTORE CHALLENGE: a fresh challenge, kept by the card (across power
    /// cycles) until a restore authorization uses it.
    pub(crate) fn get_restore_challenge(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let ch = crypto::random::<16>().to_vec();
        self.state.restore_challenge = ch.clone();
        self.mark_dirty();
        Ok(ch)
    }

    /// Another card's backup opens only under this card's domain key: the
    /// header must name this card's domain and generation. A card without a
    /// domain key answers 6985, a backup of another domain or generation 6A88
    /// (referenced data not found: this card does not hold that key).
    fn check_backup_domain(&self, h: &HeaderInfo) -> Result<(), u16> {
        if !self.state.has_domain_key() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        if h.domain != self.state.domain() {
            return Err(sw::REF_DATA_NOT_FOUND);
        }
        Ok(())
    }

    /// Check a header against this card and derive its backup key.
    fn open_header(&self, h: &HeaderInfo, raw: &[u8], other_card: bool) -> Result<Zeroizing<[u8; 32]>, u16> {
        if h.page_size != self.state.page_size || h.page_count != self.state.page_count {
            return Err(sw::WRONG_DATA);
        }
        let unique: Zeroizing<Vec<u8>> = if other_card {
            self.check_backup_domain(h)?;
            let mut ck = Zeroizing::new([0u8; 32]);
            ck.copy_from_slice(&self.state.common_key);
            let (nonce, sealed) = h.wrapped_unique_key.split_at(12);
            crypto::open(
                &ck,
                nonce,
                &unique_wrap_aad(&h.card_number, h.counter, &h.domain),
                sealed,
            )
            .map_err(|_| sw::WRONG_DATA)?
        } else {
            if h.card_number != self.state.card_number {
                return Err(sw::WRONG_DATA);
            }
            Zeroizing::new(self.state.unique_key.clone())
        };
        let key = backup_key(&unique, &h.card_number, h.counter)?;
        let mut aad = bk::CONTROL_LABEL.to_vec();
        aad.extend_from_slice(&raw[..h.prefix_len]);
        let control = crypto::open(&key, &[0xFF; 12], &aad, &h.control).map_err(|_| sw::WRONG_DATA)?;
        // The authenticated control information must say what the clear header says.
        let mut expect = vec![bk::VERSION];
        expect.extend_from_slice(&lv(&h.card_number));
        expect.extend_from_slice(&raw[1..16]);
        if control.len() != expect.len() + 8 || control[..expect.len()] != expect[..] {
            return Err(sw::WRONG_DATA);
        }
        Ok(key)
    }

    /// RESTORE: P1 = 00 same card, 01 other card, 02 next backup of the chain;
    /// P2 bit 0 = issuer override of the rollback check (admin session).
    /// Data = header, and for P1 = 01: authorization length (2) || signature (64).
    pub(crate) fn restore(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 > bk::RESTORE_NEXT_IN_CHAIN || c.p2 & !bk::RESTORE_OVERRIDE_ROLLBACK != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if self.session.backup.is_some() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let override_rollback = c.p2 & bk::RESTORE_OVERRIDE_ROLLBACK != 0;
        if override_rollback && !self.session.admin_authenticated {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        // Other-card data ends with: authorized counter (4) || 00 40 || signature (64).
        let (raw, auth) = if c.p1 == bk::RESTORE_OTHER_CARD {
            let a = AuthorizedRestore::parse(&c.data).map_err(|e| match e {
                AuthorizedRestoreError::TooShort => sw::WRONG_LENGTH,
                AuthorizedRestoreError::BadSignatureLength => sw::WRONG_DATA,
            })?;
            (
                a.header,
                Some((a.counter, a.chain_hash, a.signature, a.signer_certificate)),
            )
        } else {
            (&c.data[..], None)
        };
        let h = parse_header(raw).ok_or(sw::WRONG_DATA)?;
        match c.p1 {
            bk::RESTORE_NEXT_IN_CHAIN => {
                let r = self.session.restore.as_ref().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
                let ok = r.current.trailer_ok
                    && h.kind == bk::TYPE_DIFFERENTIAL
                    && h.card_number == r.current.card
                    && h.counter > r.current.counter
                    && r.chain.contains(&h.base);
                if !ok {
                    return Err(sw::WRONG_DATA);
                }
                let other = r.other_card;
                let key = self.open_header(&h, raw, other)?;
                let r = self.session.restore.as_mut().expect("checked");
                // Agreements name the chain so far: a longer chain needs new ones.
                r.agreed.clear();
                r.chain.push(h.counter);
                r.header_hashes.push(crypto::sha256(raw));
                r.current = incoming(&h, raw, key);
                Ok(vec![])
            }
            p1 => {
                let other = p1 == bk::RESTORE_OTHER_CARD;
                if h.kind != bk::TYPE_FULL {
                    return Err(sw::WRONG_DATA);
                }
                let mut authorized_counter = None;
                let mut authorized_chain = None;
                let mut taken = None;
                if other {
                    if h.card_number == self.state.card_number {
                        return Err(sw::WRONG_DATA);
                    }
                    // Before the challenge is used: a backup of another domain
                    // changes nothing on this card.
                    self.check_backup_domain(&h)?;
                    // Authorization: issuer signature naming source, backup, this card and
                    // the challenge this card handed out (used once, whatever the outcome).
                    let challenge = std::mem::take(&mut self.state.restore_challenge);
                    self.mark_dirty();
                    let (counter, chain_hash, sig, signer) = auth.expect("other-card data has an authorization");
                    // A card without a registration certificate is no restore target.
                    if challenge.is_empty() || self.state.certificate.is_empty() || counter < h.counter {
                        return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
                    }
                    let own_certificate = crypto::sha256(&self.state.certificate);
                    let msg = authorization_message(
                        &h.card_number,
                        counter,
                        &self.state.card_number,
                        &own_certificate,
                        &challenge,
                        chain_hash,
                    );
                    // The signer's certificate under the installed issuer root, then the signature.
                    if !self.restore_signer_verifies(signer, &msg, sig) {
                        return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
                    }
                    taken = Some(challenge);
                    authorized_counter = Some(counter);
                    authorized_chain = Some(chain_hash.try_into().expect("32 bytes"));
                }
                let key = self.open_header(&h, raw, other)?;
                self.session.restore = Some(RestoreSession {
                    override_rollback,
                    other_card: other,
                    authorized_counter,
                    authorized_chain,
                    header_hashes: vec![crypto::sha256(raw)],
                    challenge: taken,
                    agreed: Vec::new(),
                    chain: vec![h.counter],
                    current: incoming(&h, raw, key),
                    staged: BTreeMap::new(),
                });
                Ok(vec![])
            }
        }
    }

    /// RESTORE DATA: P1 = 00 a record, 01 the trailer of the current backup,
    /// 02 the last record followed by the trailer (one APDU less). P2 = 00.
    pub(crate) fn restore_data(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 > bk::RESTORE_DATA_AGREEMENT || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if c.p1 == bk::RESTORE_DATA_AGREEMENT {
            return self.restore_agreement(&c.data);
        }
        let r = self.session.restore.as_ref().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        if r.current.trailer_ok {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        match c.p1 {
            0 => self.take_record(&c.data)?,
            1 => self.take_trailer(&c.data)?,
            _ => {
                if c.data.len() < bk::TRAILER_LEN {
                    return Err(sw::WRONG_LENGTH);
                }
                let (record, trailer) = c.data.split_at(c.data.len() - bk::TRAILER_LEN);
                self.take_record(record)?;
                self.take_trailer(trailer)?;
            }
        }
        Ok(vec![])
    }

    /// RESTORE DATA P1 03: a data provider's agreement that this restore
    /// writes its `authorized` application. Only once the chain's last
    /// trailer is in (a later RESTORE P1 02 drops the agreements). The card
    /// checks that the application is an `authorized` one owned by a
    /// provider, that the certificate is a DPR under the data registrar root
    /// naming that owner, and the signature over the agreement message for
    /// this chain, this card and this restore's challenge. A refusal leaves
    /// the restore in progress and the application out of it.
    fn restore_agreement(&mut self, data: &[u8]) -> HandlerResult {
        let r = self.session.restore.as_ref().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        if !r.current.trailer_ok {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let a = bk::RestoreAgreement::parse(data).ok_or(sw::WRONG_LENGTH)?;
        let owner = self
            .state
            .applications
            .iter()
            .find(|x| x.id == a.app)
            .filter(|x| {
                !x.value
                    && x.storing.rule == cardvault_proto::storing::StorageRule::Authorized
                    && x.storing.owner != cardvault_proto::storing::Party::Issuer.as_str()
            })
            .map(|x| x.storing.owner.clone())
            .ok_or(sw::WRONG_DATA)?;
        // A same-card restore takes the outstanding challenge now (used once,
        // whatever the outcome); an other-card restore took it at RESTORE.
        if self.session.restore.as_ref().is_some_and(|r| r.challenge.is_none()) {
            let ch = std::mem::take(&mut self.state.restore_challenge);
            if !ch.is_empty() {
                self.mark_dirty();
            }
            self.session.restore.as_mut().expect("checked").challenge = Some(ch);
        }
        let r = self.session.restore.as_ref().expect("checked");
        let challenge = r.challenge.clone().unwrap_or_default();
        if challenge.is_empty() || self.state.certificate.is_empty() {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let Some(root) = openssl::x509::X509::from_der(&self.state.storing.data_registrar_root).ok() else {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        };
        let named = cardvault_proto::storing::verify_party_certificate(
            &root,
            a.certificate,
            cardvault_proto::storing::Party::Provider,
        );
        if named.as_deref() != Ok(owner.as_str()) {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let key = openssl::x509::X509::from_der(a.certificate)
            .ok()
            .and_then(|c| cardvault_proto::cert::ecka_public_key(&c).ok())
            .ok_or(sw::SECURITY_STATUS_NOT_SATISFIED)?;
        let chain = crypto::sha256(&r.header_hashes.concat());
        let restore = authorization_message(
            &r.current.card,
            r.current.counter,
            &self.state.card_number,
            &crypto::sha256(&self.state.certificate),
            &challenge,
            &chain,
        );
        let msg = bk::agreement_message(a.app, &owner, &restore);
        if !crypto::verify_p256(&key, &msg, a.signature).unwrap_or(false) {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let r = self.session.restore.as_mut().expect("checked");
        if !r.agreed.contains(&a.app) {
            r.agreed.push(a.app);
        }
        Ok(vec![])
    }

    /// Check the trailer of the current backup; any mismatch abandons the restore.
    fn take_trailer(&mut self, t: &[u8]) -> Result<(), u16> {
        let t = Trailer::parse(t).ok_or(sw::WRONG_LENGTH)?;
        let r = self.session.restore.as_mut().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let cur = &mut r.current;
        let count = t.record_count;
        let mac = trailer_mac(&cur.key, &cur.header_hash, count, cur.records_hash.clone().finish())?;
        if count != cur.next_record || !openssl::memcmp::eq(&mac, &t.mac) || cur.pages_received != cur.pages_declared {
            // Truncated, reordered or forged: the whole restore is abandoned.
            self.session.restore = None;
            return Err(sw::WRONG_DATA);
        }
        cur.trailer_ok = true;
        Ok(())
    }

    /// Open the next record and stage its pages; any failure abandons the restore.
    fn take_record(&mut self, data: &[u8]) -> Result<(), u16> {
        let ps = self.state.page_size as usize;
        let pc = self.state.page_count;
        let r = self.session.restore.as_mut().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let cur = &mut r.current;
        let index = cur.next_record;
        let aad = record_aad(&cur.card, cur.counter, index);
        let Ok(plain) = crypto::open(&cur.key, &record_nonce(index), &aad, data) else {
            self.session.restore = None;
            return Err(sw::WRONG_DATA);
        };
        // Parse runs; any inconsistency abandons the restore.
        let mut pages = Vec::new();
        let ok = (|| {
            let runs = u16::from_be_bytes(plain.get(..2)?.try_into().ok()?);
            let mut i = 2usize;
            for _ in 0..runs {
                let first = u16::from_be_bytes(plain.get(i..i + 2)?.try_into().ok()?);
                let n = u16::from_be_bytes(plain.get(i + 2..i + 4)?.try_into().ok()?);
                i += 4;
                if n == 0 || first as u32 + n as u32 > pc as u32 {
                    return None;
                }
                for k in 0..n {
                    pages.push((first + k, plain.get(i..i + ps)?.to_vec()));
                    i += ps;
                }
            }
            (i == plain.len()).then_some(())
        })();
        let r = self.session.restore.as_mut().expect("present");
        let cur = &mut r.current;
        if ok.is_none() || cur.pages_received as usize + pages.len() > cur.pages_declared as usize {
            self.session.restore = None;
            return Err(sw::WRONG_DATA);
        }
        hash_record(&mut cur.records_hash, data);
        cur.next_record += 1;
        cur.pages_received += pages.len() as u16;
        for (p, content) in pages {
            r.staged.insert(p, content);
        }
        Ok(())
    }

    /// RESTORE COMPLETE: commit every staged page in one state write, flag the
    /// restored value applications, clear the change flags. Returns pages written (2).
    pub(crate) fn restore_complete(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 || !c.data.is_empty() {
            return Err(sw::WRONG_P1P2);
        }
        let r = self.session.restore.as_ref().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        if !r.current.trailer_ok {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let last = r.current.counter;
        // Other card: the chain must end with the authorized counter and be
        // exactly the chain the issuer's signature covers.
        // (bk::chain_hash over the headers: SHA-256 of their SHA-256s.)
        let received = crypto::sha256(&r.header_hashes.concat());
        if r.other_card && (r.authorized_counter != Some(last) || r.authorized_chain != Some(received)) {
            self.session.restore = None;
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        // Anti-rollback: never back to a state older than the newest backup this
        // card has made or restored, unless the issuer overrides.
        if !r.other_card && last < self.state.backup.newest_seen && !r.override_rollback {
            self.session.restore = None;
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let r = self.session.restore.take().expect("present");
        // A value application's pages are never written from a backup: its
        // value is reset (FIG. 20) and stays reset, so a restore cannot bring
        // back spent value nor carry value written into a backup.
        let value_pages: Vec<Range<u16>> = self.value_page_ranges();
        // Nor an `authorized` or `issuer-only` application's: those change only
        // by STORE DATA UNDER AUTHORIZATION, or by a restore their provider
        // agreed to (RESTORE DATA P1 03).
        let authorized_pages: Vec<Range<u16>> = self.authorized_page_ranges(&r.agreed);
        let in_value = |p: &u16| value_pages.iter().chain(&authorized_pages).any(|v| v.contains(p));
        let mut written = 0u16;
        for (p, content) in r.staged.iter().filter(|(p, _)| !in_value(p)) {
            let range = self.page_bytes(*p);
            self.state.memory[range].copy_from_slice(content);
            written += 1;
        }
        let ps = self.state.page_size as usize;
        for a in self.state.applications.iter_mut().filter(|a| a.value) {
            if r.staged
                .keys()
                .any(|p| (a.first_page..a.first_page + a.page_count).contains(p))
            {
                a.restored = true;
                let v = a.first_page as usize * ps..a.first_page as usize * ps + 4;
                self.state.memory[v].fill(0);
            }
        }
        self.state.change_flags.fill(0);
        if r.other_card {
            self.state.backup.base = 0; // the next own backup must be full
        } else {
            self.state.backup.base = last;
            self.state.backup.newest_seen = self.state.backup.newest_seen.max(last);
        }
        self.mark_dirty();
        Ok(written.to_be_bytes().to_vec())
    }

    fn value_app(&self, id: u8) -> Result<Range<usize>, u16> {
        let a = self
            .state
            .applications
            .iter()
            .find(|a| a.id == id && a.value)
            .ok_or(sw::WRONG_P1P2)?;
        let start = a.first_page as usize * self.state.page_size as usize;
        Ok(start..start + 4)
    }

    /// GET BALANCE: P1 = application id of a value application. Returns 4 bytes.
    pub(crate) fn get_balance(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p2 != 0 || !c.data.is_empty() {
            return Err(sw::WRONG_P1P2);
        }
        let r = self.value_app(c.p1)?;
        self.reset_restored_values(&r);
        Ok(self.state.memory[r].to_vec())
    }

    /// The page ranges of the value applications.
    fn value_page_ranges(&self) -> Vec<Range<u16>> {
        let apps = self.state.applications.iter().filter(|a| a.value);
        apps.map(|a| a.first_page..a.first_page.saturating_add(a.page_count))
            .collect()
    }

    /// Whether a byte range of memory touches a value application's pages.
    pub(crate) fn touches_value_application(&self, r: &Range<usize>) -> bool {
        let s = self.state.page_size as usize;
        self.value_page_ranges()
            .iter()
            .any(|v| r.start < v.end as usize * s && v.start as usize * s < r.end)
    }

    /// GET LOAD CHALLENGE: P1 = application id of a value application. A fresh
    /// challenge, kept by the card (across power cycles) until a CREDIT uses
    /// it. PIN required.
    pub(crate) fn get_load_challenge(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p2 != 0 || !c.data.is_empty() {
            return Err(sw::WRONG_P1P2);
        }
        self.value_app(c.p1)?;
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let ch = crypto::random::<{ load::LOAD_CHALLENGE_LEN }>().to_vec();
        self.state.load_challenge = ch.clone();
        self.mark_dirty();
        Ok(ch)
    }

    /// CREDIT: P1 = application id, data = amount (4) || issuer signature (64)
    /// over `load::load_message` (card number, application, amount, the
    /// outstanding load challenge). PIN required. The challenge is used once,
    /// whatever the outcome; without a valid authorization: 6982.
    /// DEBIT: P1 = application id, data = amount (4). PIN required.
    pub(crate) fn credit_debit(&mut self, c: &CommandApdu, credit: bool) -> HandlerResult {
        if c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let amount = if credit {
            match c.data.len() {
                // An amount alone: no authorization presented.
                4 => return Err(sw::SECURITY_STATUS_NOT_SATISFIED),
                n if n > load::CREDIT_DATA_LEN => {}
                _ => return Err(sw::WRONG_LENGTH),
            }
            LoadAuthorization::parse(&c.data).ok_or(sw::WRONG_LENGTH)?.amount
        } else {
            let [a, b, c3, d] = c.data[..] else {
                return Err(sw::WRONG_LENGTH);
            };
            u32::from_be_bytes([a, b, c3, d])
        };
        let r = self.value_app(c.p1)?;
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if self.session.backup.is_some() || self.session.restore.is_some() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        if credit {
            let challenge = std::mem::take(&mut self.state.load_challenge);
            if !challenge.is_empty() {
                self.mark_dirty();
            }
            let auth = LoadAuthorization::parse(&c.data).ok_or(sw::WRONG_LENGTH)?;
            let msg = load::load_message(&self.state.card_number, c.p1, amount, &challenge);
            if challenge.len() != load::LOAD_CHALLENGE_LEN
                || !self.issuer_signature_verifies(&auth.signer_certificate, &msg, &auth.signature)
            {
                return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
            }
        }
        self.reset_restored_values(&r);
        let bal = u32::from_be_bytes(self.state.memory[r.clone()].try_into().expect("4 bytes"));
        let new = if credit {
            bal.checked_add(amount)
        } else {
            bal.checked_sub(amount)
        }
        .ok_or(sw::WRONG_DATA)?;
        self.state.memory[r.clone()].copy_from_slice(&new.to_be_bytes());
        self.flag_changed(&r);
        self.mark_dirty();
        Ok(new.to_be_bytes().to_vec())
    }
}

fn incoming(h: &HeaderInfo, raw: &[u8], key: Zeroizing<[u8; 32]>) -> Incoming {
    Incoming {
        card: h.card_number.clone(),
        counter: h.counter,
        pages_declared: h.pages,
        pages_received: 0,
        key,
        header_hash: crypto::sha256(raw),
        records_hash: Sha256::new(),
        next_record: 0,
        trailer_ok: false,
    }
}
