//! The card client: one method per card command, with the card's answers
//! turned into typed values and errors. Every APDU the terminal sends to a
//! card is built here (the `apdu` command, which sends what the user typed,
//! is the one exception).

mod commands;
mod kinds;
mod refusal;
pub mod secure;
mod storing;
mod value;
mod wallet;

pub use cardvault_proto::takeout::KeyOrigin;
pub use kinds::{CardRole, ExportState};
pub use refusal::Refusal;
pub use secure::{CardIdentity, CertificateInfo, CertificateReport};
pub use storing::{ApplicationEntry, ApplicationRule, CardStoringRequest};
pub use value::{Application, BackupBlock, BackupRequest, Completion};

use crate::apdu::{Channel, Command, Response, Stats, StatusWord};
use crate::error::{Error, Result};
use crate::issuer::IssuerCredentials;
use crate::transport::Reader;
use crate::trust::Trust;
use cardvault_proto::{self as proto, scp11, tag, to_hex};
use iso7816_tlv::ber::{Tlv, Value};
use openssl::x509::X509;
use secure::SecureChannel;
use serde::Serialize;

/// What `cardvault status` reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CardStatus {
    pub card_number: String,
    pub role: CardRole,
    pub applet_version: String,
    pub pin_tries_left: u8,
    pub pin_max_tries: u8,
    pub pin_blocked: bool,
    pub issued: bool,
    pub member_number: Option<String>,
    pub expiry: Option<String>,
    pub page_size: u16,
    pub page_count: u16,
    pub extended_length: bool,
}

/// A cardvault card, reached through a channel, with the secure channel
/// (SCP11b) the session opens before the first sensitive command.
pub struct CardClient<'a> {
    ch: Channel<'a>,
    /// Issuer roots this card must be certified under before it gets a secret.
    trust: Trust,
    /// Factory CAs a blank card's factory certificate must verify under
    /// before the issuer sends it anything (issuance only).
    factory: Trust,
    /// The reader's built-in (test) issuer, if any.
    built_in_issuer: Option<crate::transport::BuiltInIssuer>,
    secure: Option<SecureChannel>,
    /// Secure sessions opened so far on this client: names the open one.
    sessions: u64,
}

/// How the terminal authenticates as the card's issuer for admin commands:
/// SCP11a with an operator key certified under the issuer root that is
/// installed on the card (`cardvault issuer init`, `--issuer DIR`). There is
/// no shared admin key.
#[derive(Debug, Clone)]
pub enum IssuerAuth {
    Operator(std::sync::Arc<IssuerCredentials>),
}

impl IssuerAuth {
    /// The operator's credentials.
    pub fn credentials(&self) -> &std::sync::Arc<IssuerCredentials> {
        match self {
            IssuerAuth::Operator(c) => c,
        }
    }
}

/// How a card session is opened.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Print every APDU (secrets masked) on stderr.
    pub trace: bool,
    /// Trusted issuer roots (the reader's built-in root is added to them).
    pub trust: Trust,
    /// Trusted factory CAs for blank cards' factory certificates (the
    /// reader's built-in factory CA is added to them).
    pub factory_trust: Trust,
}

impl SessionOptions {
    /// Default options trusting `trust`.
    pub fn trusting(trust: Trust) -> SessionOptions {
        SessionOptions {
            trace: false,
            trust,
            factory_trust: Trust::none(),
        }
    }
}

impl<'a> CardClient<'a> {
    /// Open a session with the card in `reader`: lock it (a PC/SC transaction
    /// for as long as the client lives) and SELECT the cardvault applet. The
    /// secure channel is opened later, before the first command that needs it.
    pub fn open(reader: &'a mut dyn Reader, options: SessionOptions) -> Result<CardClient<'a>> {
        let (caps, name) = (reader.caps(), reader.name().to_string());
        let trust = match reader.built_in_root() {
            Some(pem) => options.trust.with_pem(pem, "built-in test issuer")?,
            None => options.trust,
        };
        let factory = match reader.built_in_factory_root() {
            Some(pem) => options.factory_trust.with_pem(pem, "built-in test factory")?,
            None => options.factory_trust,
        };
        let built_in_issuer = reader.built_in_issuer();
        let tx = reader.transaction().map_err(|_| Error::CardRemoved(name.clone()))?;
        let mut client = CardClient {
            ch: Channel::new(tx, caps, &name, options.trace),
            trust,
            factory,
            built_in_issuer,
            secure: None,
            sessions: 0,
        };
        client.select()?;
        Ok(client)
    }

    /// A client over a channel that is already open (no SELECT is sent),
    /// trusting `trust`.
    pub fn new(ch: Channel<'a>, trust: Trust) -> CardClient<'a> {
        CardClient {
            ch,
            trust,
            factory: Trust::none(),
            built_in_issuer: None,
            secure: None,
            sessions: 0,
        }
    }

    /// The reader's built-in (test) issuer: it certifies embedded cards when
    /// no issuer is named, and its root is the one the test factory installs
    /// on blank cards. `None` for PC/SC readers.
    pub fn built_in_issuer(&self) -> Option<crate::transport::BuiltInIssuer> {
        self.built_in_issuer
    }

    /// The channel itself, for conformance tests that send commands out of
    /// order or malformed on purpose: what goes through it directly is never
    /// wrapped. Workflows use the methods.
    pub fn channel(&mut self) -> &mut Channel<'a> {
        &mut self.ch
    }

    /// APDUs and bytes sent and received so far in this session.
    pub fn stats(&self) -> Stats {
        self.ch.stats()
    }

    /// The reader this session runs on.
    pub fn reader(&self) -> &str {
        self.ch.reader()
    }

    /// SELECT the cardvault applet. Any answer but `9000` with the applet's
    /// FCI (template `6F` naming the AID in `84`) gives [`Error::NotCardvault`]:
    /// nothing else is sent to such a card.
    /// SELECT ends the card's session, the secure channel with it.
    pub fn select(&mut self) -> Result<()> {
        self.secure = None;
        let reader = self.ch.reader().to_string();
        let not_cardvault = |answer: String| Error::NotCardvault {
            reader: reader.clone(),
            answer,
        };
        let r = match self.ch.transmit(&Command::select_aid(proto::AID)) {
            Ok(r) => r,
            Err(Error::Malformed { reason, .. }) => return Err(not_cardvault(format!("malformed: {reason}"))),
            Err(e) => return Err(e),
        };
        if r.sw != StatusWord::Ok {
            return Err(not_cardvault(format!("{:04X}", r.sw.to_u16())));
        }
        let names_applet = parse_tlv(&r.data).ok().is_some_and(|fci| {
            fci.tag().to_bytes() == [0x6F]
                && fci
                    .find(&iso7816_tlv::ber::Tag::try_from(0x84u32).expect("tag 84"))
                    .is_some_and(|t| matches!(t.value(), Value::Primitive(aid) if aid[..] == *proto::AID))
        });
        if !names_applet {
            let shown = if r.data.is_empty() {
                "no data".to_string()
            } else {
                format!("{} bytes", r.data.len())
            };
            return Err(not_cardvault(format!("9000 with {shown}, not the applet's FCI")));
        }
        Ok(())
    }

    /// Send a command and collect its whole answer: under the secure channel
    /// when one is open or the command needs one (which opens it first).
    pub fn transmit(&mut self, cmd: &Command) -> Result<Response> {
        if cmd.cla & !proto::cla::CHAINING == proto::cla::ISO && cmd.ins == proto::ins::SELECT {
            // SELECT goes plain and ends the card's session.
            self.secure = None;
            return self.ch.transmit(cmd);
        }
        if self.secure.is_none() && secure::needs_secure_session(cmd) {
            self.open_secure_session()?;
        }
        let Some(sc) = self.secure.as_mut() else {
            return self.ch.transmit(cmd);
        };
        let wire = secure::wrap(sc, cmd, self.ch.caps().extended)?;
        self.ch.trace_protected_command(cmd);
        let r = match self.ch.transmit(&wire) {
            Ok(r) => r,
            Err(e) => {
                self.secure = None;
                return Err(e);
            }
        };
        match secure::unwrap(sc, cmd.name, &r.data, r.sw) {
            Ok(data) => {
                self.ch.trace_protected_response(cmd, &data, r.sw);
                // The card ends the session on a secure messaging error.
                if matches!(r.sw.to_u16(), proto::sw::SM_DATA_INCORRECT | proto::sw::SM_DATA_MISSING) {
                    self.secure = None;
                }
                Ok(Response { data, sw: r.sw })
            }
            Err(e) => {
                self.secure = None;
                Err(e)
            }
        }
    }

    /// Send a command and require `9000`; other status words become errors.
    pub fn exec(&mut self, cmd: &Command) -> Result<Vec<u8>> {
        let r = self.transmit(cmd)?;
        if r.sw.is_ok() {
            Ok(r.data)
        } else {
            Err(Error::Card {
                command: cmd.name,
                sw: r.sw,
            })
        }
    }

    /// Whether a secure channel is open.
    pub fn is_secure(&self) -> bool {
        self.secure.is_some()
    }

    /// The open secure session, by a number no later session of this client
    /// shares; `None` when none is open. What the card granted in a session
    /// (a verified PIN) holds only while this stays the same.
    pub fn secure_session(&self) -> Option<u64> {
        self.secure.as_ref().map(|_| self.sessions)
    }

    /// The verified identity of the card, once the secure channel is open.
    pub fn identity(&self) -> Option<&CardIdentity> {
        self.secure.as_ref().map(|s| &s.identity)
    }

    /// GET DATA `BF21`: the card's certificate chain (root side first, leaf
    /// last); empty when the card has none.
    pub fn certificates(&mut self) -> Result<Vec<X509>> {
        let cmd = Command::get_data(proto::cert::TAG_CERTIFICATE_STORE).expect_max();
        let r = self.ch.transmit(&cmd)?;
        match r.sw {
            StatusWord::Ok => proto::cert::split_certificates(&r.data).map_err(|e| Error::Malformed {
                command: "GET DATA",
                reason: format!("certificate store: {e}"),
            }),
            StatusWord::ReferenceDataNotFound | StatusWord::InsNotSupported | StatusWord::FileNotFound => {
                Ok(Vec::new())
            }
            sw => Err(Error::Card {
                command: "GET DATA",
                sw,
            }),
        }
    }

    /// The issuer roots this session trusts (configured, and the reader's
    /// built-in test root for embedded cards).
    pub fn trusted_roots(&self) -> &[X509] {
        self.trust.roots()
    }

    /// Read the card's certificate chain and verify it under the trusted roots.
    /// A blank card's factory certificate is not verified (it opens no
    /// holder session); the reason says whether a trusted factory CA
    /// certifies it, which is what issuance needs.
    pub fn certificate_report(&mut self) -> Result<CertificateReport> {
        let chain = self.certificates()?;
        let result = secure::verify(&self.trust, &chain);
        let factory = result.is_err()
            && chain
                .last()
                .and_then(proto::cert::card_subject)
                .is_some_and(|s| s.role == proto::cert::FACTORY_ROLE)
            && !self.factory.is_empty()
            && secure::verify(&self.factory, &chain).is_ok();
        let reason = match result {
            Ok(_) => None,
            Err(_) if factory => Some(format!(
                "a blank card's factory certificate, verified under the trusted factory CA ({}): for issuance only",
                self.factory.sources().join(", ")
            )),
            Err(why) => Some(why),
        };
        Ok(CertificateReport {
            chain: chain.iter().map(CertificateInfo::of).collect(),
            verified: reason.is_none(),
            reason,
            trusted_roots: self.trust.sources().to_vec(),
        })
    }

    /// Open the SCP11b secure channel now (it opens by itself before the
    /// first sensitive command): read and verify the card's certificate
    /// chain, then INTERNAL AUTHENTICATE. A card that is not certified by a
    /// trusted issuer, or fails the receipt, gets [`Error::UntrustedCard`].
    /// A session open before is replaced (the card starts a new session).
    pub fn open_secure_session(&mut self) -> Result<&CardIdentity> {
        self.secure = None;
        let untrusted = |reader: &str, reason: String| Error::UntrustedCard {
            reader: reader.to_string(),
            reason,
        };
        let chain = self.certificates()?;
        let identity = secure::verify(&self.trust, &chain).map_err(|r| untrusted(self.ch.reader(), r))?;
        let hs = scp11::ClientHandshake::scp11b(scp11::KVN, &identity.public_key)
            .map_err(|e| untrusted(self.ch.reader(), e.to_string()))?;
        let c = hs.command();
        let cmd = Command::new("INTERNAL AUTHENTICATE", c.cla, c.ins, c.p1, c.p2)
            .with_data(&c.data)
            .expect(256);
        let r = self.ch.transmit(&cmd)?;
        if !r.sw.is_ok() {
            return Err(untrusted(
                self.ch.reader(),
                format!("the card refused the SCP11b handshake ({})", r.sw),
            ));
        }
        let channel = hs
            .finish(&r.data)
            .map_err(|e| untrusted(self.ch.reader(), e.to_string()))?;
        self.sessions += 1;
        Ok(&self.secure.insert(SecureChannel { channel, identity }).identity)
    }

    /// GET DATA of the card status template (E1): every data object by tag.
    fn status_template(&mut self) -> Result<std::collections::BTreeMap<u16, Vec<u8>>> {
        let raw = self.exec(&Command::card_status())?;
        let malformed = |reason: String| Error::Malformed {
            command: "GET DATA",
            reason,
        };
        let tlv = parse_tlv(&raw).map_err(malformed)?;
        let Value::Constructed(children) = tlv.value() else {
            return Err(malformed("the status template is not constructed".into()));
        };
        let mut map = std::collections::BTreeMap::new();
        for c in children {
            let t = c.tag().to_bytes();
            let t = match t {
                [a, b] => u16::from_be_bytes([*a, *b]),
                [a] => *a as u16,
                _ => return Err(malformed("unexpected tag".into())),
            };
            if let Value::Primitive(v) = c.value() {
                map.insert(t, v.clone());
            }
        }
        Ok(map)
    }

    /// GET DATA of the card status template.
    pub fn status(&mut self) -> Result<CardStatus> {
        let m = self.status_template()?;
        parse_status(&m)
    }

    /// Card status and key state from one GET DATA.
    pub fn overview(&mut self) -> Result<(CardStatus, KeyState)> {
        let m = self.status_template()?;
        Ok((parse_status(&m)?, parse_key_state(&m)?))
    }

    /// GET DATA of the card number only.
    pub fn card_number(&mut self) -> Result<String> {
        let raw = self.exec(&Command::get_data(tag::CARD_NUMBER))?;
        match parse_tlv(&raw).map(|t| t.value().clone()) {
            Ok(Value::Primitive(v)) => card_number_text(&v).map_err(|reason| Error::Malformed {
                command: "GET DATA",
                reason,
            }),
            _ => Err(Error::Malformed {
                command: "GET DATA",
                reason: "card number is not a primitive data object".into(),
            }),
        }
    }

    /// VERIFY the holder PIN.
    pub fn verify_pin(&mut self, pin: &[u8]) -> Result<()> {
        let r = self.transmit(&Command::verify_pin(pin))?;
        pin_result("VERIFY", r.sw)
    }

    /// CHANGE REFERENCE DATA for the holder PIN.
    pub fn change_pin(&mut self, old: &[u8], new: &[u8]) -> Result<()> {
        let r = self.transmit(&Command::change_pin(old, new))?;
        pin_result("CHANGE REFERENCE DATA", r.sw)
    }

    /// RESET RETRY COUNTER (admin session open): reset the PIN's tries and,
    /// with `new_pin`, set a new PIN.
    pub fn reset_retry_counter(&mut self, new_pin: Option<&[u8]>) -> Result<()> {
        self.exec(&Command::reset_retry_counter(new_pin)).map(|_| ())
    }

    /// Send `raw` exactly as given (GET RESPONSE and `6Cxx` handled when
    /// `auto`); for showing the card's answers to hand-written APDUs.
    pub fn send_raw(&mut self, raw: &[u8], auto: bool) -> Result<crate::apdu::Response> {
        self.ch.send_raw(raw, auto)
    }

    /// Open an SCP11a session as the issuer's operator: the card's chain
    /// verified as for SCP11b, the operator's certificate chain sent with
    /// PERFORM SECURITY OPERATION (the card checks it under its installed
    /// issuer root), then MUTUAL AUTHENTICATE. The card treats the session as
    /// an issuer (admin) session; every later command is protected.
    ///
    /// The card's chain may verify under the trusted roots or the issuer's
    /// own root; a **blank** card (factory certificate, role `blank`) under a
    /// trusted factory CA instead, since issuance is what gives it a
    /// registration certificate. Nothing is sent before the chain verifies.
    pub fn open_issuer_session(&mut self, issuer: &IssuerCredentials) -> Result<&CardIdentity> {
        self.secure = None;
        let untrusted = |reader: &str, reason: String| Error::UntrustedCard {
            reader: reader.to_string(),
            reason,
        };
        let chain = self.certificates()?;
        let identity = self
            .verify_for_issuer(issuer, &chain)
            .map_err(|r| untrusted(self.ch.reader(), r))?;
        for c in scp11::oce_certificate_commands(scp11::KVN, scp11::KID_OCE, &issuer.chain_der()?) {
            let cmd = Command::new("PERFORM SECURITY OPERATION", c.cla, c.ins, c.p1, c.p2).with_data(&c.data);
            let r = self.ch.transmit(&cmd)?;
            match r.sw {
                StatusWord::Ok => {}
                StatusWord::SecurityStatusNotSatisfied => {
                    return Err(Error::IssuerRefused(self.ch.reader().to_string()))
                }
                sw => {
                    return Err(Error::Card {
                        command: "PERFORM SECURITY OPERATION",
                        sw,
                    })
                }
            }
        }
        let hs = scp11::ClientHandshake::scp11a(scp11::KVN, &identity.public_key, issuer.key()?)
            .map_err(|e| untrusted(self.ch.reader(), e.to_string()))?;
        let c = hs.command();
        let cmd = Command::new("MUTUAL AUTHENTICATE", c.cla, c.ins, c.p1, c.p2)
            .with_data(&c.data)
            .expect(256);
        let r = self.ch.transmit(&cmd)?;
        if !r.sw.is_ok() {
            return Err(Error::Card {
                command: "MUTUAL AUTHENTICATE",
                sw: r.sw,
            });
        }
        let channel = hs
            .finish(&r.data)
            .map_err(|e| untrusted(self.ch.reader(), e.to_string()))?;
        self.sessions += 1;
        Ok(&self.secure.insert(SecureChannel { channel, identity }).identity)
    }

    /// The identity of a card the issuer opens a session with: its chain
    /// under the trusted roots plus the issuer's own root, else (a blank
    /// card) its factory certificate under a trusted factory CA.
    fn verify_for_issuer(
        &self,
        issuer: &IssuerCredentials,
        chain: &[X509],
    ) -> std::result::Result<CardIdentity, String> {
        let trust = match issuer.root().and_then(|r| r.to_pem().ok()) {
            Some(pem) => self
                .trust
                .with_pem(&pem, &issuer.dir.display().to_string())
                .map_err(|e| e.to_string())?,
            None => self.trust.clone(),
        };
        let as_issued = secure::verify(&trust, chain);
        let Err(why) = as_issued else {
            return as_issued;
        };
        let blank = chain
            .last()
            .and_then(proto::cert::card_subject)
            .is_some_and(|s| s.role == proto::cert::FACTORY_ROLE);
        if !blank {
            return Err(why);
        }
        if self.factory.is_empty() {
            return Err(
                "a blank card's factory certificate needs a trusted factory CA (--factory-trust CA.pem,                  CARDVAULT_FACTORY_TRUST or factory_trust = [...] in config.toml)"
                    .into(),
            );
        }
        secure::verify(&self.factory, chain).map_err(|e| format!("factory certificate: {e}"))
    }

    /// Authenticate as the issuer for this session: the operator's SCP11a
    /// session, with a card whose certificate names `card_number` (the
    /// number the card reported; a card certified for another number is
    /// refused before any secret is sent).
    pub fn issuer_authenticate(&mut self, auth: &IssuerAuth, card_number: &str) -> Result<()> {
        let reader = self.ch.reader().to_string();
        let identity = self.open_issuer_session(auth.credentials())?;
        if identity.subject.card_number != card_number {
            let certified = identity.subject.card_number.clone();
            self.secure = None;
            return Err(Error::UntrustedCard {
                reader,
                reason: format!("the card reports number {card_number} but its certificate names {certified}"),
            });
        }
        Ok(())
    }

    /// PUT DATA `BF22` (issuer session, before END PERSONALIZATION): install
    /// the issuer root `root_der` as the card's trust anchor.
    pub fn install_trust_anchor(&mut self, root_der: &[u8]) -> Result<()> {
        self.exec(&Command::put_data(proto::cert::TAG_TRUST_ANCHOR, root_der))
            .map(|_| ())
    }

    /// GENERATE ECKA KEY (issuer session, before END PERSONALIZATION): the
    /// card's new key agreement public key (65 bytes), for its registration
    /// certificate.
    pub fn generate_ecka_key(&mut self) -> Result<Vec<u8>> {
        let public = self.exec(&Command::generate_ecka_key())?;
        proto::crypto::public_key(&public).map_err(|_| Error::Malformed {
            command: "GENERATE ECKA KEY",
            reason: format!("{} bytes are not a P-256 public key", public.len()),
        })?;
        Ok(public)
    }

    /// GENERATE SIGNING KEY (issuer session, before END PERSONALIZATION):
    /// the card's new signing key (65-byte public key), for its signing
    /// key certificate.
    pub fn generate_signing_key(&mut self) -> Result<Vec<u8>> {
        let public = self.exec(&Command::generate_signing_key())?;
        proto::crypto::public_key(&public).map_err(|_| Error::Malformed {
            command: "GENERATE SIGNING KEY",
            reason: format!("{} bytes are not a P-256 public key", public.len()),
        })?;
        Ok(public)
    }

    /// PUT DATA `DF35` (issuer session, after GENERATE SIGNING KEY): store
    /// the signing key's certificate (DER). The card refuses one not under
    /// its installed root (6982) or not for its new key, number and role
    /// (6A80): [`Refusal::SigningCertificateRefused`].
    pub fn store_signing_certificate(&mut self, der: &[u8]) -> Result<()> {
        let r = self.transmit(&Command::put_data(proto::tag::STORING_CERTIFICATE, der))?;
        match r.sw {
            StatusWord::Ok => Ok(()),
            sw @ (StatusWord::SecurityStatusNotSatisfied | StatusWord::WrongData) => {
                Err(Refusal::SigningCertificateRefused(sw.to_u16()).into())
            }
            sw => Err(Error::Card {
                command: "PUT DATA",
                sw,
            }),
        }
    }

    /// PUT DATA `BF23` and `BF24` (issuer session, before END
    /// PERSONALIZATION): install the issuer registrar root and the data
    /// registrar root (DER), the trust anchors of storing authorizations.
    pub fn install_registrar_roots(&mut self, issuer_registrar: &[u8], data_registrar: &[u8]) -> Result<()> {
        self.exec(&Command::put_data(proto::tag::ISSUER_REGISTRAR_ROOT, issuer_registrar))?;
        self.exec(&Command::put_data(proto::tag::DATA_REGISTRAR_ROOT, data_registrar))
            .map(|_| ())
    }

    /// PUT DATA `BF21` (issuer session, after GENERATE ECKA KEY): store the
    /// registration certificate (DER). The card refuses a certificate not
    /// under its installed root (6982) or not for its new key, number and
    /// role (6A80): [`Refusal::RegistrationCertificateRefused`].
    pub fn store_registration_certificate(&mut self, der: &[u8]) -> Result<()> {
        let r = self.transmit(&Command::put_data(proto::cert::TAG_CERTIFICATE_STORE, der))?;
        match r.sw {
            StatusWord::Ok => Ok(()),
            sw @ (StatusWord::SecurityStatusNotSatisfied | StatusWord::WrongData) => {
                Err(Refusal::RegistrationCertificateRefused(sw.to_u16()).into())
            }
            sw => Err(Error::Card {
                command: "PUT DATA",
                sw,
            }),
        }
    }

    /// READ MEMORY: `len` bytes from page `page` on.
    pub fn read_memory(&mut self, page: u16, len: usize) -> Result<Vec<u8>> {
        let len16 = u16::try_from(len)
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| Error::Usage(format!("READ MEMORY: {len} bytes is not 1 to 65535")))?;
        let data = self.exec(&Command::read_memory(page, len16))?;
        if data.len() != len {
            return Err(Error::Malformed {
                command: "READ MEMORY",
                reason: format!("asked for {len} bytes, got {}", data.len()),
            });
        }
        Ok(data)
    }

    /// WRITE MEMORY: `data` from page `page` on.
    pub fn write_memory(&mut self, page: u16, data: &[u8]) -> Result<()> {
        self.exec(&Command::write_memory(page, data)).map(|_| ())
    }
}

/// Key group and main key state, as the card reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyState {
    pub group_size: u8,
    /// Element numbers (1-based) that are written.
    pub elements_written: Vec<u8>,
    pub group_complete: bool,
    /// Key group check value (hex), when the group is complete.
    pub check_value: Option<String>,
    /// generated, imported or key-service; None when the card holds no main key.
    #[serde(serialize_with = "crate::util::serialize_display_opt")]
    pub key_origin: Option<KeyOrigin>,
    /// The encryption (public) key, hex, when readable.
    pub public_key: Option<String>,
    pub source_card: Option<String>,
    pub export: ExportStatus,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExportStatus {
    pub take_outs: u32,
    /// none, pending (bound to a target, no receipt yet) or confirmed.
    pub state: ExportState,
    pub target: Option<String>,
    pub no_export_after_backup: bool,
}

impl CardClient<'_> {
    /// GET DATA of one primitive data object; `None` when the card has none (6A88).
    pub fn data_object(&mut self, t: u16) -> Result<Option<Vec<u8>>> {
        let r = self.transmit(&Command::get_data(t))?;
        match r.sw {
            StatusWord::Ok => {}
            StatusWord::ReferenceDataNotFound => return Ok(None),
            sw => {
                return Err(Error::Card {
                    command: "GET DATA",
                    sw,
                })
            }
        }
        match parse_tlv(&r.data).map(|t| t.value().clone()) {
            Ok(Value::Primitive(v)) => Ok(Some(v)),
            _ => Err(Error::Malformed {
                command: "GET DATA",
                reason: format!("tag {t:04X} is not a primitive data object"),
            }),
        }
    }

    /// Key group check value (8 bytes) of a complete group.
    pub fn key_group_kcv(&mut self) -> Result<Option<Vec<u8>>> {
        self.data_object(tag::KEY_GROUP_KCV)
    }

    /// The card's encryption key (65-byte uncompressed P-256), if readable.
    pub fn public_key(&mut self) -> Result<Option<Vec<u8>>> {
        self.data_object(tag::PUBLIC_KEY)
    }

    pub fn key_state(&mut self) -> Result<KeyState> {
        let m = self.status_template()?;
        parse_key_state(&m)
    }

    pub fn put_data(&mut self, t: u16, data: &[u8]) -> Result<()> {
        self.exec(&Command::put_data(t, data)).map(|_| ())
    }

    /// LOAD DOMAIN KEY, in the issuer's SCP11a session (see
    /// [`CardClient::issuer_authenticate`]); the card checks the key against
    /// the check value and keeps the domain id and generation with it.
    pub fn load_domain_key(&mut self, load: &proto::domain::DomainKeyLoad) -> Result<()> {
        let data = load.encode();
        let r = self.transmit(&Command::load_domain_key(&data))?;
        match r.sw {
            StatusWord::Ok => Ok(()),
            StatusWord::SecurityStatusNotSatisfied => Err(Refusal::DomainKeyNeedsIssuerSession.into()),
            StatusWord::ConditionsNotSatisfied => Err(Refusal::DomainKeyNotAccepted.into()),
            StatusWord::WrongData => Err(Refusal::DomainKeyRejected.into()),
            sw => Err(Error::Card {
                command: "LOAD DOMAIN KEY",
                sw,
            }),
        }
    }

    /// GET DATA `DF32`: the card's issuer domain and generation, `None` when
    /// the card holds no domain key.
    pub fn domain(&mut self) -> Result<Option<proto::domain::DomainRef>> {
        match self.data_object(tag::DOMAIN)? {
            None => Ok(None),
            Some(v) => proto::domain::DomainRef::parse(&v)
                .filter(|d| d.is_some())
                .map(Some)
                .ok_or_else(|| Error::Malformed {
                    command: "GET DATA",
                    reason: format!("domain object of {} bytes", v.len()),
                }),
        }
    }

    pub fn end_personalization(&mut self) -> Result<()> {
        self.exec(&Command::end_personalization()).map(|_| ())
    }

    /// WRITE KEY ELEMENT n (write-once; the same value again is accepted).
    /// Returns the group's check value once the group is complete.
    pub fn write_key_element(&mut self, index: u8, element: &[u8]) -> Result<Option<Vec<u8>>> {
        let r = self.transmit(&Command::write_key_element(index, element))?;
        match r.sw {
            StatusWord::Ok if r.data.is_empty() => Ok(None),
            StatusWord::Ok if r.data.len() == 8 => Ok(Some(r.data)),
            StatusWord::Ok => Err(Error::Malformed {
                command: "WRITE KEY ELEMENT",
                reason: "the check value is not 8 bytes".into(),
            }),
            StatusWord::ConditionsNotSatisfied => Err(Refusal::ElementAlreadyWritten(index).into()),
            sw => Err(Error::Card {
                command: "WRITE KEY ELEMENT",
                sw,
            }),
        }
    }

    pub fn reset_key_group(&mut self) -> Result<()> {
        self.exec(&Command::reset_key_group()).map(|_| ())
    }

    /// GENERATE KEY PAIR; returns the new encryption key.
    pub fn generate_key_pair(&mut self) -> Result<Vec<u8>> {
        let r = self.transmit(&Command::generate_key_pair())?;
        match r.sw {
            StatusWord::Ok if r.data.len() == 65 => Ok(r.data),
            StatusWord::Ok => Err(Error::Malformed {
                command: "GENERATE KEY PAIR",
                reason: "public key is not 65 bytes".into(),
            }),
            StatusWord::ConditionsNotSatisfied => Err(Refusal::KeyGenerationNotAllowed.into()),
            sw => Err(Error::Card {
                command: "GENERATE KEY PAIR",
                sw,
            }),
        }
    }

    /// The card's certificate chain (DER, leaf last), verified under the
    /// trusted roots: from the open secure session, else read (GET DATA
    /// `BF21`) and verified now. A card that is not certified gets
    /// [`Error::UntrustedCard`].
    pub fn certified_chain(&mut self) -> Result<Vec<u8>> {
        if let Some(sc) = &self.secure {
            return Ok(sc.identity.chain_der.clone());
        }
        let chain = self.certificates()?;
        secure::verify(&self.trust, &chain)
            .map(|id| id.chain_der)
            .map_err(|reason| Error::UntrustedCard {
                reader: self.ch.reader().to_string(),
                reason,
            })
    }

    /// SHA-256 of the card's registration certificate (the last certificate
    /// of its verified chain): what a restore authorization names it by.
    pub fn registration_certificate_sha256(&mut self) -> Result<[u8; 32]> {
        let chain = self.certified_chain()?;
        let certs = proto::cert::split_certificates(&chain).map_err(|e| Error::Malformed {
            command: "GET DATA",
            reason: format!("certificate store: {e}"),
        })?;
        let leaf = certs
            .last()
            .and_then(|c| c.to_der().ok())
            .ok_or_else(|| Error::Malformed {
                command: "GET DATA",
                reason: "no certificate".into(),
            })?;
        Ok(proto::crypto::sha256(&leaf))
    }

    /// TAKE OUT KEY towards the card with the certificate chain
    /// `target_chain` (see [`CardClient::certified_chain`]); returns the
    /// take-out blob, wrapped to that card's certified key.
    pub fn take_out_key(&mut self, target_chain: &[u8]) -> Result<Vec<u8>> {
        let r = self.transmit(&Command::take_out_key(target_chain))?;
        match r.sw {
            StatusWord::Ok => Ok(r.data),
            StatusWord::ReferenceDataNotUsable => Err(Refusal::TakeOutTargetNotCertified.into()),
            StatusWord::ConditionsNotSatisfied => Err(Refusal::TakeOutNotAllowed.into()),
            StatusWord::ReferenceDataNotFound => Err(Refusal::NoMainKey.into()),
            sw => Err(Error::Card {
                command: "TAKE OUT KEY",
                sw,
            }),
        }
    }

    /// IMPORT KEY; returns the receipt (counter || MAC) for the main card.
    pub fn import_key(&mut self, blob: &[u8], expose_public_key: bool) -> Result<Vec<u8>> {
        let r = self.transmit(&Command::import_key(blob, expose_public_key))?;
        match r.sw {
            StatusWord::Ok if cardvault_proto::takeout::Receipt::parse(&r.data).is_some() => Ok(r.data),
            StatusWord::Ok => Err(Error::Malformed {
                command: "IMPORT KEY",
                reason: "receipt is not 36 bytes".into(),
            }),
            StatusWord::ReferenceDataNotUsable => Err(Refusal::KeyGroupMismatch.into()),
            StatusWord::WrongData => Err(Refusal::TakeOutNotForThisCard.into()),
            StatusWord::ConditionsNotSatisfied => Err(Refusal::ImportNotAllowed.into()),
            sw => Err(Error::Card {
                command: "IMPORT KEY",
                sw,
            }),
        }
    }

    pub fn confirm_duplicate(&mut self, receipt: &[u8]) -> Result<()> {
        self.exec(&Command::confirm_duplicate(receipt)).map(|_| ())
    }

    /// RELEASE DUPLICATE (admin session), with the target's DESTROY KEY
    /// receipt and its signing certificate once a take-out has left the
    /// card: `6985` without them, `6984` when the certificate does not chain
    /// to the card's issuer root, `6A80` when the receipt is not the bound
    /// target's signature over the latest take-out.
    pub fn release_duplicate(&mut self, proof: Option<(&proto::takeout::DestroyReceipt, &[u8])>) -> Result<()> {
        let r = self.transmit(&Command::release_duplicate(proof))?;
        match r.sw {
            StatusWord::Ok => Ok(()),
            StatusWord::ConditionsNotSatisfied => Err(Refusal::DestroyReceiptNeeded.into()),
            StatusWord::ReferenceDataNotUsable => Err(Refusal::DestroyReceiptNotCertified.into()),
            StatusWord::WrongData => Err(Refusal::DestroyReceiptRejected.into()),
            sw => Err(Error::Card {
                command: "RELEASE DUPLICATE",
                sw,
            }),
        }
    }

    /// DESTROY KEY on a backup card: destroy the key imported from `source`
    /// and refuse its take-outs up to `counter`; returns the receipt
    /// (counter (4) || signature (64) by the card's signing key) for the
    /// source card's RELEASE DUPLICATE.
    pub fn destroy_key(&mut self, source: &str, counter: u32) -> Result<proto::takeout::DestroyReceipt> {
        let r = self.exec(&Command::destroy_key(source, counter))?;
        match proto::takeout::DestroyReceipt::parse(&r) {
            Some(receipt) if receipt.counter == counter => Ok(receipt),
            _ => Err(Error::Malformed {
                command: "DESTROY KEY",
                reason: format!(
                    "a receipt for take-out {counter} is {} bytes starting with that counter; the card sent {} bytes",
                    proto::takeout::DestroyReceipt::LEN,
                    r.len()
                ),
            }),
        }
    }

    /// UNWRAP FILE KEY: the card opens a wrapped file key with its private key.
    pub fn unwrap_file_key(&mut self, aad: &[u8], wrapped: &[u8]) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        let r = self.transmit(&Command::unwrap_file_key(aad, wrapped))?;
        match r.sw {
            StatusWord::Ok if r.data.len() == 32 => {
                let mut k = zeroize::Zeroizing::new([0u8; 32]);
                k.copy_from_slice(&r.data);
                let mut data = r.data;
                zeroize::Zeroize::zeroize(&mut data);
                Ok(k)
            }
            StatusWord::WrongData => Err(Refusal::FileKeyNotOpened.into()),
            StatusWord::ReferenceDataNotFound => Err(Refusal::NoDecryptionKey.into()),
            sw => Err(Error::Card {
                command: "UNWRAP FILE KEY",
                sw,
            }),
        }
    }

    pub fn set_peer_key(&mut self, public: &[u8]) -> Result<()> {
        self.exec(&Command::set_peer_key(public)).map(|_| ())
    }

    pub fn rewrap_to_peer(&mut self, aad: &[u8], wrapped: &[u8]) -> Result<Vec<u8>> {
        self.exec(&Command::rewrap_to_peer(aad, wrapped))
    }

    /// Key service variant (FIG. 28/29): set main keys made outside the card.
    /// The private key travels only wrapped to a transport key that the card
    /// made for this issuer session; the session must be an SCP11a issuer
    /// session (see [`CardClient::issuer_authenticate`]), whose handshake
    /// proved the card's certified key and whose R-MAC authenticates the
    /// transport key. Returns the card's encryption key.
    pub fn set_service_key(&mut self, card_number: &str, private: &[u8]) -> Result<Vec<u8>> {
        if self.secure.is_none() {
            return Err(Error::Usage(
                "the key service's key goes only to a card in an issuer (SCP11a) session".into(),
            ));
        }
        let public = self.exec(&Command::get_transport_key())?;
        if public.len() != 65 || proto::crypto::public_key(&public).is_err() {
            return Err(Error::Malformed {
                command: "GET TRANSPORT KEY",
                reason: "answer is not a 65-byte P-256 public key".into(),
            });
        }
        let n = card_number.as_bytes();
        let mut d = zeroize::Zeroizing::new([0u8; 32]);
        if private.len() != 32 {
            return Err(Error::Usage("the key service's private key must be 32 bytes".into()));
        }
        d.copy_from_slice(private);
        let mut aad = proto::takeout::KEY_SERVICE_LABEL.to_vec();
        aad.extend_from_slice(n);
        let wrapped = cardvault_proto::crypto::wrap_key(&public, &d, &aad).map_err(|e| Error::Data(e.to_string()))?;
        let r = self.transmit(&Command::set_main_key(&wrapped))?;
        match r.sw {
            StatusWord::Ok => Ok(r.data),
            StatusWord::ConditionsNotSatisfied => Err(Refusal::MainKeyNotAccepted.into()),
            sw => Err(Error::Card {
                command: "SET MAIN KEY",
                sw,
            }),
        }
    }
}

/// Deepest nesting of constructed data objects in a card's answer (the
/// status template is one level; certificates and SCP11 objects two or three).
pub const MAX_TLV_DEPTH: usize = 4;
/// Most data objects in one answer (the status template holds about 20).
pub const MAX_TLV_OBJECTS: usize = 256;

/// One BER-TLV data object from a card's answer. The answer is first walked
/// without recursion or allocation, so that what `iso7816-tlv` then parses
/// (recursively, re-measuring each constructed object as it grows) has at
/// most [`MAX_TLV_DEPTH`] levels and [`MAX_TLV_OBJECTS`] objects: a card
/// cannot overflow the stack or make parsing quadratic.
fn parse_tlv(raw: &[u8]) -> std::result::Result<Tlv, String> {
    check_tlv_shape(raw)?;
    Tlv::from_bytes(raw).map_err(|e| format!("{e:?}"))
}

fn check_tlv_shape(raw: &[u8]) -> std::result::Result<(), String> {
    if raw.len() > crate::apdu::MAX_RESPONSE {
        return Err(format!("{} bytes of data objects", raw.len()));
    }
    // Ends of the constructed objects we are inside, innermost last.
    let mut ends = [0usize; MAX_TLV_DEPTH + 1];
    ends[0] = raw.len();
    let (mut depth, mut objects, mut i) = (0usize, 0usize, 0usize);
    let byte = |i: usize| raw.get(i).copied().ok_or("a data object is cut short");
    loop {
        while depth > 0 && i == ends[depth] {
            depth -= 1;
        }
        if i == ends[depth] {
            return Ok(());
        }
        objects += 1;
        if objects > MAX_TLV_OBJECTS {
            return Err(format!("more than {MAX_TLV_OBJECTS} data objects"));
        }
        let first = byte(i)?;
        i += 1;
        if first & 0x1F == 0x1F {
            // Tags of up to 3 bytes, as the parser takes them.
            let mut more = 0;
            loop {
                let b = byte(i)?;
                i += 1;
                more += 1;
                if b & 0x80 == 0 {
                    break;
                }
                if more == 2 {
                    return Err("a tag longer than 3 bytes".into());
                }
            }
        }
        let l = byte(i)?;
        i += 1;
        let len = match l {
            0..=0x7F => l as usize,
            0x81..=0x83 => {
                let n = (l & 0x7F) as usize;
                let mut v = 0usize;
                for _ in 0..n {
                    v = v << 8 | byte(i)? as usize;
                    i += 1;
                }
                v
            }
            _ => return Err(format!("length byte {l:02X}")),
        };
        let end = i
            .checked_add(len)
            .filter(|e| *e <= ends[depth])
            .ok_or("a data object runs past the one that holds it")?;
        if first & 0x20 != 0 {
            if depth == MAX_TLV_DEPTH {
                return Err(format!("data objects nested deeper than {MAX_TLV_DEPTH} levels"));
            }
            depth += 1;
            ends[depth] = end;
        } else {
            i = end;
        }
    }
}

/// A card number as the card reports it: 1 to 32 letters, digits or '-'
/// (docs/PROTOCOL.md, `DF 01`). It names files, vault rows and messages, so
/// nothing else is taken from a card.
pub fn card_number_text(bytes: &[u8]) -> std::result::Result<String, String> {
    let ok = (1..=32).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-');
    if ok {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    } else {
        Err(format!(
            "the card number is not 1 to 32 letters, digits or '-' ({} bytes)",
            bytes.len()
        ))
    }
}

/// Text a card reports that is shown to the operator: UTF-8 without control
/// characters, so that a card cannot put line breaks or terminal escape
/// sequences into the output.
fn card_text(t: u16, bytes: &[u8]) -> Result<String> {
    let s = std::str::from_utf8(bytes).map_err(|_| malformed_status(&format!("tag {t:04X} is not UTF-8 text")))?;
    if s.chars().any(char::is_control) {
        return Err(malformed_status(&format!("tag {t:04X} holds control characters")));
    }
    Ok(s.to_string())
}

fn malformed_status(reason: &str) -> Error {
    Error::Malformed {
        command: "GET DATA",
        reason: reason.into(),
    }
}

fn parse_status(m: &std::collections::BTreeMap<u16, Vec<u8>>) -> Result<CardStatus> {
    let field = |t: u16| {
        m.get(&t)
            .ok_or_else(|| malformed_status(&format!("tag {t:04X} missing")))
    };
    let byte = |t: u16| -> Result<u8> {
        field(t)?
            .first()
            .copied()
            .ok_or_else(|| malformed_status("empty field"))
    };
    let word = |t: u16| -> Result<u16> {
        let v = field(t)?;
        (v.len() == 2)
            .then(|| u16::from_be_bytes([v[0], v[1]]))
            .ok_or_else(|| malformed_status("bad u16 field"))
    };
    let text = |t: u16| -> Result<String> { card_text(t, field(t)?) };
    let optional = |t: u16| m.get(&t).map(|v| card_text(t, v)).transpose();
    let v = field(tag::APPLET_VERSION)?;
    if v.len() != 2 {
        return Err(malformed_status("bad applet version"));
    }
    let tries = byte(tag::PIN_TRIES_LEFT)?;
    let max_tries = byte(tag::PIN_MAX_TRIES)?;
    if !(1..=15).contains(&max_tries) || tries > max_tries {
        return Err(malformed_status(&format!(
            "PIN tries {tries} of {max_tries} (maximum 1 to 15)"
        )));
    }
    let (page_size, page_count) = (word(tag::PAGE_SIZE)?, word(tag::PAGE_COUNT)?);
    if !(16..=4096).contains(&page_size) || page_count == 0 {
        return Err(malformed_status(&format!(
            "page size {page_size} (16 to 4096) or page count {page_count} (at least 1)"
        )));
    }
    Ok(CardStatus {
        card_number: card_number_text(field(tag::CARD_NUMBER)?).map_err(|r| malformed_status(&r))?,
        role: CardRole::from(text(tag::ROLE)?.as_str()),
        applet_version: format!("{}.{}", v[0], v[1]),
        pin_tries_left: tries,
        pin_max_tries: max_tries,
        pin_blocked: tries == 0,
        issued: byte(tag::ISSUED)? != 0,
        member_number: optional(tag::MEMBER_NUMBER)?,
        expiry: optional(tag::EXPIRY)?,
        page_size,
        page_count,
        extended_length: byte(tag::FLAGS)? & 1 != 0,
    })
}

fn parse_key_state(m: &std::collections::BTreeMap<u16, Vec<u8>>) -> Result<KeyState> {
    let kg = m
        .get(&tag::KEY_GROUP_STATUS)
        .ok_or_else(|| malformed_status("no key group status"))?;
    let [size, bits] = kg[..] else {
        return Err(malformed_status("key group status is not 2 bytes"));
    };
    if size > 8 {
        return Err(malformed_status(&format!("key group size {size} is not 1 to 8")));
    }
    if u16::from(bits) >> size != 0 {
        return Err(malformed_status(&format!(
            "key group bitmap {bits:02X} names elements beyond size {size}"
        )));
    }
    let elements_written: Vec<u8> = (0..size).filter(|i| bits & (1 << i) != 0).map(|i| i + 1).collect();
    let text = |t: u16| m.get(&t).map(|v| card_text(t, v)).transpose();
    let ex = m
        .get(&tag::EXPORT_STATUS)
        .ok_or_else(|| malformed_status("no export status"))?;
    if ex.len() < 7 || ex.len() != 7 + ex[6] as usize {
        return Err(malformed_status("bad export status"));
    }
    let target = if ex.len() > 7 {
        card_number_text(&ex[7..]).map_err(|r| malformed_status(&format!("export target: {r}")))?
    } else {
        String::new()
    };
    Ok(KeyState {
        group_size: size,
        group_complete: elements_written.len() == size as usize && size > 0,
        elements_written,
        check_value: m.get(&tag::KEY_GROUP_KCV).map(|k| to_hex(k)),
        key_origin: text(tag::KEY_ORIGIN)?
            .map(|o| o.parse::<KeyOrigin>())
            .transpose()
            .map_err(|e| malformed_status(&e))?,
        public_key: m.get(&tag::PUBLIC_KEY).map(|p| to_hex(p)),
        source_card: text(tag::SOURCE_CARD)?,
        export: ExportStatus {
            take_outs: u32::from_be_bytes([ex[0], ex[1], ex[2], ex[3]]),
            state: match ex[4] {
                0..=2 => ExportState::from_byte(ex[4]),
                other => return Err(malformed_status(&format!("export state {other:02X} is not 00 to 02"))),
            },
            target: (!target.is_empty()).then_some(target),
            no_export_after_backup: ex[5] & 1 != 0,
        },
    })
}

fn pin_result(command: &'static str, sw: StatusWord) -> Result<()> {
    match sw {
        StatusWord::Ok => Ok(()),
        StatusWord::VerifyFailed { tries_left: 0 } | StatusWord::AuthMethodBlocked => Err(Error::PinBlocked),
        StatusWord::VerifyFailed { tries_left } => Err(Error::WrongPin { tries_left }),
        sw => Err(Error::Card { command, sw }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_shape_is_bounded_before_parsing() {
        // The status template shape parses.
        let ok = [0xE1, 0x07, 0xDF, 0x01, 0x01, b'1', 0xDF, 0x04, 0x00];
        assert!(parse_tlv(&ok).is_ok());
        // 64 KiB of nested constructed objects: refused by depth, no recursion.
        let deep = crate::transport::hostile::answers::nested_templates(16000);
        assert!(deep.len() > 60000);
        assert!(parse_tlv(&deep).unwrap_err().contains("nested deeper"));
        let mut nest = vec![0xE1, 0x00];
        for _ in 0..MAX_TLV_DEPTH {
            let mut outer = vec![0xE1, nest.len() as u8];
            outer.extend_from_slice(&nest);
            nest = outer;
        }
        assert!(parse_tlv(&nest).unwrap_err().contains("nested deeper"));
        // Many small objects: refused by count.
        let mut many = vec![0xE1, 0x82, 0x04, 0x02];
        many.extend(std::iter::repeat_n([0x80u8, 0x00], 513).flatten());
        assert!(parse_tlv(&many).unwrap_err().contains("more than 256"));
        // Lengths past the end, bad length bytes, long tags.
        assert!(parse_tlv(&[0xE1, 0x05, 0x80, 0x01]).is_err());
        assert!(parse_tlv(&[0xE1, 0x84, 0, 0, 0, 1, 0]).is_err());
        assert!(parse_tlv(&[0xDF, 0x81, 0x81, 0x01, 0x00]).is_err());
        assert!(parse_tlv(&[0x9F, 0x81, 0x01, 0x01, 0x00]).is_ok());
    }

    #[test]
    fn card_numbers_and_texts_from_the_card_cannot_break_lines() {
        assert!(card_number_text(b"1234-abcd-XYZ").is_ok());
        for bad in [&b""[..], b"FUZZ-M\nIN", b"12 34", b"\x1b[2J", &[b'1'; 33]] {
            assert!(card_number_text(bad).is_err(), "{bad:?}");
        }
        assert!(card_text(tag::ROLE, b"main").is_ok());
        assert!(card_text(tag::ROLE, b"ma\nin").is_err());
        assert!(card_text(tag::ROLE, b"\x1b]0;owned\x07").is_err());
        assert!(card_text(tag::ROLE, &[0xFF]).is_err());
    }

    #[test]
    fn key_group_size_and_bitmap_are_checked() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(tag::EXPORT_STATUS, vec![0; 7]);
        m.insert(tag::KEY_GROUP_STATUS, vec![9, 0xFF]);
        assert!(parse_key_state(&m).is_err());
        m.insert(tag::KEY_GROUP_STATUS, vec![3, 0x08]);
        assert!(parse_key_state(&m).is_err());
        m.insert(tag::KEY_GROUP_STATUS, vec![8, 0xFF]);
        assert!(parse_key_state(&m).unwrap().group_complete);
        m.insert(tag::EXPORT_STATUS, vec![0, 0, 0, 0, 7, 0, 0]);
        assert!(parse_key_state(&m).is_err());
    }
}
