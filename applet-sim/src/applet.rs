//! The cardvault applet: command handlers over the persistent card state.
//!
//! The ISO layer (`iso.rs`) has already parsed, de-chained and routed the
//! command; handlers here check access conditions, change state and return
//! response data or a status word. A handler that changes persistent state
//! marks it dirty; the state is committed before the response leaves.

use crate::state::{CardState, PinState, Store};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::{self as proto, cert, cla, scp11, sw, tag, Ins};
use iso7816_tlv::ber::{Tag, Tlv, Value};
use zeroize::Zeroizing;

/// Volatile session state, lost at reset or power off.
#[derive(Debug, Default)]
pub struct Session {
    pub pin_verified: bool,
    pub admin_authenticated: bool,
    pub challenge: Option<[u8; proto::CHALLENGE_LEN]>,
    /// Ephemeral key for SET MAIN KEY (key service variant), one per session.
    pub transport_key: Option<cardvault_proto::crypto::KeyPair>,
    /// A backup in progress (BACKUP .. BACKUP COMPLETE).
    pub backup: Option<crate::backup::BackupSession>,
    /// A restore in progress, pages staged (RESTORE .. RESTORE COMPLETE).
    pub restore: Option<crate::backup::RestoreSession>,
    /// The open SCP11 secure channel.
    pub secure: Option<crate::secure::SecureSession>,
    /// SCP11a: the OCE certificate chain received so far, and its verified key.
    pub oce: crate::secure::OceState,
    /// Issuance: the ECKA key pair of GENERATE ECKA KEY, waiting for its
    /// registration certificate (PUT DATA `BF21`) in this session.
    pub pending_ecka: Option<cardvault_proto::crypto::KeyPair>,
    /// Issuance: the signing key pair of GENERATE SIGNING KEY, waiting for
    /// its certificate (PUT DATA `DF35`) in this session.
    pub pending_signing: Option<cardvault_proto::crypto::KeyPair>,
}

/// What the volatile session has gained so far, seen from outside the card:
/// for tests and the fuzz targets' access-control invariants, which are
/// stated in terms of these flags rather than of any one command path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionView {
    pub pin_verified: bool,
    pub admin_authenticated: bool,
    /// An SCP11 secure channel is open.
    pub secure_channel: bool,
    /// A backup is in progress (BACKUP .. BACKUP COMPLETE).
    pub backup_in_progress: bool,
    /// A restore is in progress (RESTORE .. RESTORE COMPLETE).
    pub restore: Option<crate::backup::RestoreView>,
}

/// The applet with its persistent state and store.
#[derive(Debug)]
pub struct Applet {
    pub(crate) state: CardState,
    store: Store,
    pub(crate) session: Session,
    dirty: bool,
    changed: bool,
    mute: bool,
    final_sw: u16,
    /// The current command arrived under secure messaging.
    protected: bool,
    /// Fault injection: every state write fails (a worn-out or full store).
    fail_state_writes: bool,
}

/// Result of a command handler: response data, or a status word.
pub type HandlerResult = Result<Vec<u8>, u16>;

impl Applet {
    pub fn new(state: CardState, store: Store) -> Applet {
        Applet {
            state,
            store,
            session: Session::default(),
            dirty: false,
            changed: false,
            mute: false,
            final_sw: sw::OK,
            protected: false,
            fail_state_writes: false,
        }
    }

    /// Fault injection for tests: make every state write fail (as a full
    /// disk or a worn-out EEPROM would) until switched off again.
    pub fn set_fail_state_writes(&mut self, fail: bool) {
        self.fail_state_writes = fail;
    }

    fn write_state(&self) -> Result<(), crate::state::StoreError> {
        if self.fail_state_writes {
            return Err(crate::state::StoreError::Io {
                path: "(fault injection)".into(),
                source: std::io::Error::other("state writes are failing (fault injection)"),
            });
        }
        self.store.commit(&self.state)
    }

    /// Write the state now, in the middle of a command (a PIN attempt is
    /// counted before it is compared). On failure the card does what it does
    /// after any failed write (see [`Applet::process`]) and the command ends
    /// with 6581.
    pub(crate) fn commit_now(&mut self) -> Result<(), u16> {
        self.dirty = false;
        self.changed = true;
        if let Err(e) = self.write_state() {
            self.after_failed_write(e);
            return Err(sw::MEMORY_FAILURE);
        }
        Ok(())
    }

    /// The change did not reach non-volatile memory: forget the session, as a
    /// card would after tearing, and reload the last committed state; if even
    /// that fails the card goes mute until it is opened again.
    fn after_failed_write(&mut self, e: crate::state::StoreError) {
        eprintln!("applet-sim: {e}");
        self.session = Session::default();
        match &self.store {
            Store::File { path, .. } => match Store::peek(path) {
                Ok(s) => self.state = s,
                Err(_) => self.mute = true,
            },
            Store::Memory => {}
        }
    }

    pub fn state(&self) -> &CardState {
        &self.state
    }

    /// The session's flags (see [`SessionView`]).
    pub fn session_view(&self) -> SessionView {
        SessionView {
            pin_verified: self.session.pin_verified,
            admin_authenticated: self.session.admin_authenticated,
            secure_channel: self.session.secure.is_some(),
            backup_in_progress: self.session.backup.is_some(),
            restore: self.session.restore.as_ref().map(|r| r.view()),
        }
    }

    pub fn reset_session(&mut self) {
        self.session = Session::default();
    }

    /// Forget the secure session and everything the session had gained
    /// (PIN verification, admin authentication, commands in progress): after a
    /// secure messaging error, nothing of the session may be used any more.
    pub fn end_secure_session(&mut self) {
        self.session = Session::default();
    }

    /// Whether the current command arrived under secure messaging (SCP11),
    /// MAC checked and data decrypted by the ISO layer.
    pub fn protected_command(&self) -> bool {
        self.protected
    }

    /// Dispatch one command (already de-chained and, when protected,
    /// unwrapped) and commit any state change.
    pub fn process(&mut self, c: &CommandApdu) -> HandlerResult {
        self.changed = false;
        if self.mute {
            return Err(sw::MEMORY_FAILURE);
        }
        if self.state.require_secure_channel && !self.protected && proto::command_is_sensitive(c.cla, c.ins) {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let result = self.dispatch(c);
        if result.is_err() {
            self.final_sw = sw::OK;
        }
        if self.dirty {
            self.dirty = false;
            self.changed = true;
            if let Err(e) = self.write_state() {
                // The change did not reach non-volatile memory: report a memory
                // failure (see `after_failed_write`).
                self.after_failed_write(e);
                return Err(sw::MEMORY_FAILURE);
            }
        }
        result
    }

    /// Start of a command, before routing (SELECT does not reach `process`):
    /// `protected` says whether it arrived under secure messaging.
    pub fn begin_command(&mut self, protected: bool) {
        self.changed = false;
        self.protected = protected;
    }

    /// Whether the last command changed persistent state (so its answer must
    /// not be replaced by a 6Cxx that asks for the command again).
    pub fn last_changed_state(&self) -> bool {
        self.changed
    }

    fn dispatch(&mut self, c: &CommandApdu) -> HandlerResult {
        let class = c.cla & !cla::CHAINING;
        if class != cla::ISO && class != cla::PROPRIETARY {
            return Err(sw::CLA_NOT_SUPPORTED);
        }
        let Ok(ins) = Ins::try_from(c.ins) else {
            return Err(sw::INS_NOT_SUPPORTED);
        };
        match (class, ins) {
            (cla::ISO, Ins::GetData) => self.get_data(c),
            (cla::ISO, Ins::Verify) => self.verify(c),
            (cla::ISO, Ins::ChangeReferenceData) => self.change_pin(c),
            (cla::ISO, Ins::ResetRetryCounter) => self.reset_retry_counter(c),
            (cla::ISO, Ins::GetChallenge) => self.get_challenge(c),
            (cla::PROPRIETARY, Ins::ReadMemory) => self.read_memory(c),
            (cla::PROPRIETARY, Ins::WriteMemory) => self.write_memory(c),
            (cla::ISO, Ins::PutData) => self.put_data(c),
            (cla::PROPRIETARY, Ins::EndPersonalization) => self.end_personalization(c),
            (cla::PROPRIETARY, Ins::WriteKeyElement) => self.write_key_element(c),
            (cla::PROPRIETARY, Ins::ResetKeyGroup) => self.reset_key_group(c),
            (cla::PROPRIETARY, Ins::GenerateKeyPair) => self.generate_key_pair(c),
            (cla::PROPRIETARY, Ins::TakeOutKey) => self.take_out_key(c),
            (cla::PROPRIETARY, Ins::ImportKey) => self.import_key(c),
            (cla::PROPRIETARY, Ins::ConfirmDuplicate) => self.confirm_duplicate(c),
            (cla::PROPRIETARY, Ins::ReleaseDuplicate) => self.release_duplicate(c),
            (cla::PROPRIETARY, Ins::DestroyKey) => self.destroy_key(c),
            (cla::PROPRIETARY, Ins::LoadDomainKey) => self.load_domain_key(c),
            (cla::PROPRIETARY, Ins::GenerateEckaKey) => self.generate_ecka_key(c),
            (cla::PROPRIETARY, Ins::GenerateSigningKey) => self.generate_signing_key(c),
            (cla::PROPRIETARY, Ins::UnwrapFileKey) => self.unwrap_file_key(c),
            (cla::PROPRIETARY, Ins::SetPeerKey) => self.set_peer_key(c),
            (cla::PROPRIETARY, Ins::RewrapToPeer) => self.rewrap_to_peer(c),
            (cla::PROPRIETARY, Ins::GetTransportKey) => self.get_transport_key(c),
            (cla::PROPRIETARY, Ins::SetMainKey) => self.set_main_key(c),
            (cla::PROPRIETARY, Ins::Backup) => self.backup(c),
            (cla::PROPRIETARY, Ins::BackupData) => self.backup_data(c),
            (cla::PROPRIETARY, Ins::BackupComplete) => self.backup_complete(c),
            (cla::PROPRIETARY, Ins::GetRestoreChallenge) => self.get_restore_challenge(c),
            (cla::PROPRIETARY, Ins::Restore) => self.restore(c),
            (cla::PROPRIETARY, Ins::RestoreData) => self.restore_data(c),
            (cla::PROPRIETARY, Ins::RestoreComplete) => self.restore_complete(c),
            (cla::PROPRIETARY, Ins::GetBalance) => self.get_balance(c),
            (cla::PROPRIETARY, Ins::GetLoadChallenge) => self.get_load_challenge(c),
            (cla::PROPRIETARY, Ins::PerformSecurityOperation) => self.perform_security_operation(c),
            (cla::PROPRIETARY, Ins::InternalAuthenticate | Ins::MUTUAL_AUTHENTICATE) => {
                match scp11::Variant::from_command(c.ins, c.p2) {
                    Some(v) => self.scp11_handshake(c, v),
                    None => Err(sw::REF_DATA_NOT_FOUND),
                }
            }
            (cla::PROPRIETARY, Ins::Credit) => self.credit_debit(c, true),
            (cla::PROPRIETARY, Ins::Debit) => self.credit_debit(c, false),
            (cla::PROPRIETARY, Ins::StoringRequest) => self.storing_request(c),
            (cla::PROPRIETARY, Ins::StoreDataUnderAuthorization) => self.store_data_under_authorization(c),
            (cla::PROPRIETARY, Ins::GetWalletChallenge) => self.get_wallet_challenge(c),
            (cla::PROPRIETARY, Ins::LoadItem) => self.load_item(c),
            (cla::PROPRIETARY, Ins::ReadWallet) => self.read_wallet(c),
            (cla::PROPRIETARY, Ins::Spend) => self.spend(c),
            (cla::PROPRIETARY, Ins::Deposit) => self.deposit(c),
            (cla::PROPRIETARY, Ins::GetWithdrawChallenge) => self.get_withdraw_challenge(c),
            (cla::PROPRIETARY, Ins::Withdraw) => self.withdraw(c),
            (cla::PROPRIETARY, Ins::ReadSafeRecords) => self.read_safe_records(c),
            (cla::PROPRIETARY, Ins::Escrow) => self.escrow(c),
            _ => Err(sw::INS_NOT_SUPPORTED),
        }
    }

    /// The status word to end the current response with (9000 unless a handler
    /// set a warning such as 6310).
    pub fn take_final_sw(&mut self) -> u16 {
        std::mem::replace(&mut self.final_sw, sw::OK)
    }

    pub(crate) fn set_final_sw(&mut self, s: u16) {
        self.final_sw = s;
    }

    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    fn data_object(&self, t: u16) -> Option<Tlv> {
        let s = &self.state;
        let v: Vec<u8> = match proto::Tag::try_from(t).ok()? {
            proto::Tag::CardNumber => s.card_number.as_bytes().to_vec(),
            proto::Tag::Role => s.role.as_bytes().to_vec(),
            proto::Tag::AppletVersion => vec![proto::APPLET_VERSION.0, proto::APPLET_VERSION.1],
            proto::Tag::PinTriesLeft => vec![s.pin.tries_left],
            proto::Tag::PinMaxTries => vec![s.pin.max_tries],
            proto::Tag::PageSize => s.page_size.to_be_bytes().to_vec(),
            proto::Tag::PageCount => s.page_count.to_be_bytes().to_vec(),
            proto::Tag::Flags => {
                vec![(s.extended_length as u8) | ((self.session.pin_verified as u8) << 1)]
            }
            proto::Tag::Issued => vec![s.issued as u8],
            proto::Tag::Applications => {
                let mut v = Vec::new();
                for a in &s.applications {
                    v.push(a.id);
                    v.extend_from_slice(&a.first_page.to_be_bytes());
                    v.extend_from_slice(&a.page_count.to_be_bytes());
                    v.push(a.value as u8 | (a.restored as u8) << 1);
                    v.push(a.name.len() as u8);
                    v.extend_from_slice(a.name.as_bytes());
                }
                v
            }
            proto::Tag::BackupCounters => {
                let b = &s.backup;
                let changed: u32 = s.change_flags.iter().map(|f| f.count_ones()).sum();
                let mut v = b.issued.to_be_bytes().to_vec();
                v.extend_from_slice(&b.base.to_be_bytes());
                v.extend_from_slice(&b.newest_seen.to_be_bytes());
                v.extend_from_slice(&(changed as u16).to_be_bytes());
                v
            }
            proto::Tag::Domain if s.has_domain_key() => s.domain().encode().to_vec(),
            proto::Tag::ApplicationRules => self.application_rules(),
            proto::Tag::StoringCertificate if !s.storing.certificate.is_empty() => s.storing.certificate.clone(),
            proto::Tag::MemberNumber if !s.member_number.is_empty() => s.member_number.as_bytes().to_vec(),
            proto::Tag::Expiry if !s.expiry.is_empty() => s.expiry.as_bytes().to_vec(),
            proto::Tag::KeyGroupStatus => {
                let set = s.key_group.elements.iter().enumerate().filter(|(_, e)| !e.0.is_empty());
                vec![s.key_group.size, set.fold(0u8, |m, (i, _)| m | (1 << i))]
            }
            // The check value identifies the key group: only for a session
            // that verified the PIN (also left out of the card status).
            proto::Tag::KeyGroupKcv if self.session.pin_verified => self.key_group_kcv().ok()?.to_vec(),
            proto::Tag::PublicKey => match &s.main_key {
                Some(k) if k.public_readable => k.public.clone(),
                _ => return None,
            },
            proto::Tag::KeyOrigin => match &s.main_key {
                Some(k) => k.origin.as_str().as_bytes().to_vec(),
                None => return None,
            },
            proto::Tag::SourceCard => match &s.main_key {
                Some(k) if !k.source_card.is_empty() => k.source_card.as_bytes().to_vec(),
                _ => return None,
            },
            proto::Tag::PeerKey if !s.peer_key.is_empty() => s.peer_key.clone(),
            proto::Tag::ExportStatus => {
                let e = &s.export;
                let state = if e.confirmed {
                    2
                } else if e.target.is_empty() {
                    0
                } else {
                    1
                };
                let mut v = e.counter.to_be_bytes().to_vec();
                v.push(state);
                v.push(e.no_export_after_backup as u8);
                v.push(e.target.len() as u8);
                v.extend_from_slice(e.target.as_bytes());
                v
            }
            proto::Tag::CardStatus => {
                let children = [
                    tag::CARD_NUMBER,
                    tag::ROLE,
                    tag::APPLET_VERSION,
                    tag::PIN_TRIES_LEFT,
                    tag::PIN_MAX_TRIES,
                    tag::PAGE_SIZE,
                    tag::PAGE_COUNT,
                    tag::FLAGS,
                    tag::ISSUED,
                    tag::MEMBER_NUMBER,
                    tag::EXPIRY,
                    tag::KEY_GROUP_STATUS,
                    tag::KEY_GROUP_KCV,
                    tag::KEY_ORIGIN,
                    tag::PUBLIC_KEY,
                    tag::SOURCE_CARD,
                    tag::EXPORT_STATUS,
                    tag::BACKUP_COUNTERS,
                ]
                .iter()
                .filter_map(|t| self.data_object(*t))
                .collect();
                return Tlv::new(Tag::try_from(t).ok()?, Value::Constructed(children)).ok();
            }
            _ => return None,
        };
        Tlv::new(Tag::try_from(t).ok()?, Value::Primitive(v)).ok()
    }

    fn get_data(&mut self, c: &CommandApdu) -> HandlerResult {
        if u16::from_be_bytes([c.p1, c.p2]) == cert::TAG_CERTIFICATE_STORE {
            return self.certificate_store(c);
        }
        if !c.data.is_empty() {
            return Err(sw::WRONG_LENGTH);
        }
        let t = u16::from_be_bytes([c.p1, c.p2]);
        if t == tag::KEY_GROUP_KCV && !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        self.data_object(t)
            .map(|tlv| tlv.to_vec())
            .ok_or(sw::REF_DATA_NOT_FOUND)
    }

    /// VERIFY: the attempt is counted and the counter stored **before** the
    /// PIN is compared, and the counter is restored after a right PIN
    /// (ISO 7816 practice): pulling the card, or a state write that fails,
    /// cannot buy free tries. A failed write answers 6581 and compares nothing.
    fn verify(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != proto::PIN_REF {
            return Err(sw::WRONG_P1P2);
        }
        if c.data.is_empty() {
            // Status query (ISO 7816-4 7.5.6): verified, blocked, or tries left.
            return if self.state.pin.blocked() {
                Err(sw::AUTH_METHOD_BLOCKED)
            } else if self.session.pin_verified {
                Ok(vec![])
            } else {
                Err(sw::VERIFY_FAIL_PREFIX | self.state.pin.tries_left as u16)
            };
        }
        if !(proto::PIN_MIN_LEN..=proto::PIN_MAX_LEN).contains(&c.data.len()) {
            return Err(sw::WRONG_LENGTH);
        }
        if self.state.pin.blocked() {
            return Err(sw::AUTH_METHOD_BLOCKED);
        }
        self.count_pin_attempt()?;
        if self.state.pin.matches(&c.data) {
            self.state.pin.tries_left = self.state.pin.max_tries;
            self.mark_dirty();
            self.session.pin_verified = true;
            Ok(vec![])
        } else {
            Err(sw::VERIFY_FAIL_PREFIX | self.state.pin.tries_left as u16)
        }
    }

    /// Decrement the retry counter and store it before any comparison.
    fn count_pin_attempt(&mut self) -> Result<(), u16> {
        self.state.pin.tries_left -= 1;
        self.session.pin_verified = false;
        self.commit_now()
    }

    /// CHANGE REFERENCE DATA: data = len(old) || old || new. The new PIN
    /// comes with a full counter.
    fn change_pin(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != proto::PIN_REF {
            return Err(sw::WRONG_P1P2);
        }
        let data = Zeroizing::new(c.data.clone());
        let (old, new) = split_lv(&data).ok_or(sw::WRONG_DATA)?;
        let range = proto::PIN_MIN_LEN..=proto::PIN_MAX_LEN;
        if !range.contains(&old.len()) || !range.contains(&new.len()) {
            return Err(sw::WRONG_DATA);
        }
        if self.state.pin.blocked() {
            return Err(sw::AUTH_METHOD_BLOCKED);
        }
        // As VERIFY: counted and stored before the old PIN is compared.
        self.count_pin_attempt()?;
        if !self.state.pin.matches(old) {
            return Err(sw::VERIFY_FAIL_PREFIX | self.state.pin.tries_left as u16);
        }
        self.state.pin = PinState::new(new, self.state.pin.max_tries);
        self.session.pin_verified = true;
        self.mark_dirty();
        Ok(vec![])
    }

    /// RESET RETRY COUNTER: needs the issuer session (SCP11a).
    /// P1=03 resets the counter; P1=02 also sets a new PIN (data).
    fn reset_retry_counter(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p2 != proto::PIN_REF || !matches!(c.p1, 0x02 | 0x03) {
            return Err(sw::WRONG_P1P2);
        }
        if !self.session.admin_authenticated {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        match c.p1 {
            0x03 if c.data.is_empty() => {
                self.state.pin.tries_left = self.state.pin.max_tries;
            }
            0x02 if (proto::PIN_MIN_LEN..=proto::PIN_MAX_LEN).contains(&c.data.len()) => {
                self.state.pin = PinState::new(&c.data, self.state.pin.max_tries);
            }
            _ => return Err(sw::WRONG_LENGTH),
        }
        self.mark_dirty();
        Ok(vec![])
    }

    fn get_challenge(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if !c.data.is_empty() {
            return Err(sw::WRONG_LENGTH);
        }
        let mut ch = [0u8; proto::CHALLENGE_LEN];
        openssl::rand::rand_bytes(&mut ch).map_err(|_| sw::UNKNOWN)?;
        self.session.challenge = Some(ch);
        Ok(ch.to_vec())
    }

    fn page_range(&self, c: &CommandApdu, len: usize) -> Result<std::ops::Range<usize>, u16> {
        let page = u16::from_be_bytes([c.p1, c.p2]);
        if page >= self.state.page_count {
            return Err(sw::WRONG_P1P2);
        }
        let start = page as usize * self.state.page_size as usize;
        let end = start.checked_add(len).ok_or(sw::WRONG_LENGTH)?;
        if end > self.state.memory.len() {
            return Err(sw::WRONG_LENGTH);
        }
        Ok(start..end)
    }

    /// READ MEMORY (CLA 80): from page P1P2 on, as many bytes as the 2-byte
    /// length in the data field says (or Ne when there is no data). A length
    /// over Ne is delivered with `61xx` and GET RESPONSE. PIN required.
    fn read_memory(&mut self, c: &CommandApdu) -> HandlerResult {
        let len = match c.data.as_slice() {
            [] => c.ne,
            [hi, lo] => u16::from_be_bytes([*hi, *lo]) as usize,
            _ => return Err(sw::WRONG_LENGTH),
        };
        if len == 0 {
            return Err(sw::WRONG_LENGTH);
        }
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let page = u16::from_be_bytes([c.p1, c.p2]);
        if page >= self.state.page_count {
            return Err(sw::WRONG_P1P2);
        }
        let start = page as usize * self.state.page_size as usize;
        // Without an explicit length, Ne may run past the end: read to the end.
        let end = match c.data.is_empty() {
            true => self.state.memory.len().min(start + len),
            false => self.page_range(c, len)?.end,
        };
        self.reset_restored_values(&(start..end));
        Ok(self.state.memory[start..end].to_vec())
    }

    /// WRITE MEMORY (CLA 80): write the data starting at page P1P2. PIN required.
    /// The pages of a value application are never written (6982): value
    /// enters only through an issuer-authorized CREDIT.
    fn write_memory(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.data.is_empty() {
            return Err(sw::WRONG_LENGTH);
        }
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if self.session.backup.is_some() || self.session.restore.is_some() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let r = self.page_range(c, c.data.len())?;
        if self.touches_value_application(&r) {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        // Authorized and issuer-only applications: STORE DATA UNDER AUTHORIZATION only.
        if self.touches_authorized_application(&r) {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        self.reset_restored_values(&r);
        if self.state.memory[r.clone()] != c.data[..] {
            self.state.memory[r.clone()].copy_from_slice(&c.data);
            self.flag_changed(&r);
            self.mark_dirty();
        }
        Ok(vec![])
    }
}

fn split_lv(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = data.split_first()?;
    let n = n as usize;
    (rest.len() >= n).then(|| rest.split_at(n))
}
