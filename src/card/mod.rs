//! The card client: one method per card command, with the card's answers
//! turned into typed values and errors. Every APDU the terminal sends to a
//! card is built here (the `apdu` command, which sends what the user typed,
//! is the one exception).

mod commands;
mod kinds;
mod refusal;
mod value;

pub use cardvault_proto::takeout::KeyOrigin;
pub use kinds::{CardRole, ExportState};
pub use refusal::Refusal;
pub use value::{BackupBlock, BackupRequest, Completion};

use crate::apdu::{Channel, Command, Stats, StatusWord};
use crate::error::{Error, Result};
use crate::transport::Reader;
use cardvault_proto::{self as proto, tag, to_hex};
use iso7816_tlv::ber::{Tlv, Value};
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

/// A cardvault card, reached through a channel.
pub struct CardClient<'a> {
    ch: Channel<'a>,
}

/// How a card session is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionOptions {
    /// Print every APDU (secrets masked) on stderr.
    pub trace: bool,
}

impl<'a> CardClient<'a> {
    /// Open a session with the card in `reader`: lock it (a PC/SC transaction
    /// for as long as the client lives) and SELECT the cardvault applet.
    pub fn open(reader: &'a mut dyn Reader, options: SessionOptions) -> Result<CardClient<'a>> {
        let (caps, name) = (reader.caps(), reader.name().to_string());
        let tx = reader.transaction().map_err(|_| Error::CardRemoved(name.clone()))?;
        let mut client = CardClient {
            ch: Channel::new(tx, caps, &name, options.trace),
        };
        client.select()?;
        Ok(client)
    }

    /// A client over a channel that is already open (no SELECT is sent).
    pub fn new(ch: Channel<'a>) -> CardClient<'a> {
        CardClient { ch }
    }

    /// The channel itself, for conformance tests that send commands out of
    /// order or malformed on purpose. Workflows use the methods.
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

    /// SELECT the cardvault applet. A card without it gives [`Error::NotCardvault`].
    pub fn select(&mut self) -> Result<()> {
        let r = self.ch.transmit(&Command::select_aid(proto::AID))?;
        match r.sw {
            StatusWord::Ok => Ok(()),
            StatusWord::FileNotFound => Err(Error::NotCardvault(self.ch.reader().to_string())),
            sw => Err(Error::Card { command: "SELECT", sw }),
        }
    }

    /// GET DATA of the card status template (E1): every data object by tag.
    fn status_template(&mut self) -> Result<std::collections::BTreeMap<u16, Vec<u8>>> {
        let raw = self.ch.exec(&Command::card_status())?;
        let malformed = |reason: String| Error::Malformed {
            command: "GET DATA",
            reason,
        };
        let tlv = Tlv::from_bytes(&raw).map_err(|e| malformed(format!("{e:?}")))?;
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
        let raw = self.ch.exec(&Command::get_data(tag::CARD_NUMBER))?;
        match Tlv::from_bytes(&raw).map(|t| t.value().clone()) {
            Ok(Value::Primitive(v)) => String::from_utf8(v).map_err(|_| Error::Malformed {
                command: "GET DATA",
                reason: "card number is not text".into(),
            }),
            _ => Err(Error::Malformed {
                command: "GET DATA",
                reason: "card number is not a primitive data object".into(),
            }),
        }
    }

    /// VERIFY the holder PIN.
    pub fn verify_pin(&mut self, pin: &[u8]) -> Result<()> {
        let r = self.ch.transmit(&Command::verify_pin(pin))?;
        pin_result("VERIFY", r.sw)
    }

    /// CHANGE REFERENCE DATA for the holder PIN.
    pub fn change_pin(&mut self, old: &[u8], new: &[u8]) -> Result<()> {
        let r = self.ch.transmit(&Command::change_pin(old, new))?;
        pin_result("CHANGE REFERENCE DATA", r.sw)
    }

    /// Authenticate as the issuer (GET CHALLENGE + EXTERNAL AUTHENTICATE), then
    /// RESET RETRY COUNTER, optionally setting a new PIN.
    pub fn unblock_pin(&mut self, admin_key: &[u8], card_number: &str, new_pin: Option<&[u8]>) -> Result<()> {
        self.admin_authenticate(admin_key, card_number)?;
        self.reset_retry_counter(new_pin)
    }

    /// RESET RETRY COUNTER (admin session open): reset the PIN's tries and,
    /// with `new_pin`, set a new PIN.
    pub fn reset_retry_counter(&mut self, new_pin: Option<&[u8]>) -> Result<()> {
        self.ch.exec(&Command::reset_retry_counter(new_pin)).map(|_| ())
    }

    /// Send `raw` exactly as given (GET RESPONSE and `6Cxx` handled when
    /// `auto`); for showing the card's answers to hand-written APDUs.
    pub fn send_raw(&mut self, raw: &[u8], auto: bool) -> Result<crate::apdu::Response> {
        self.ch.send_raw(raw, auto)
    }

    /// Issuer authentication for this session: GET CHALLENGE, then EXTERNAL
    /// AUTHENTICATE with HMAC-SHA256(admin key, label || challenge || card number).
    pub fn admin_authenticate(&mut self, admin_key: &[u8], card_number: &str) -> Result<()> {
        let challenge = self.ch.exec(&Command::get_challenge())?;
        let cryptogram = zeroize::Zeroizing::new(
            cardvault_proto::admin::admin_cryptogram(admin_key, &challenge, card_number).map_err(|e| Error::Io {
                what: "computing the admin cryptogram".into(),
                source: std::io::Error::other(e),
            })?,
        );
        let r = self.ch.transmit(&Command::external_authenticate(&cryptogram))?;
        match r.sw {
            StatusWord::Ok => {}
            StatusWord::SecurityStatusNotSatisfied => return Err(Error::AdminAuthFailed),
            sw => {
                return Err(Error::Card {
                    command: "EXTERNAL AUTHENTICATE",
                    sw,
                })
            }
        }
        Ok(())
    }

    /// READ MEMORY: `len` bytes from page `page` on.
    pub fn read_memory(&mut self, page: u16, len: usize) -> Result<Vec<u8>> {
        let len16 = u16::try_from(len)
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| Error::Usage(format!("READ MEMORY: {len} bytes is not 1 to 65535")))?;
        let data = self.ch.exec(&Command::read_memory(page, len16))?;
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
        self.ch.exec(&Command::write_memory(page, data)).map(|_| ())
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
        let r = self.ch.transmit(&Command::get_data(t))?;
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
        match Tlv::from_bytes(&r.data).map(|t| t.value().clone()) {
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
        self.ch.exec(&Command::put_data(t, data)).map(|_| ())
    }

    pub fn end_personalization(&mut self) -> Result<()> {
        self.ch.exec(&Command::end_personalization()).map(|_| ())
    }

    /// WRITE KEY ELEMENT n (write-once; the same value again is accepted).
    /// Returns the group's check value once the group is complete.
    pub fn write_key_element(&mut self, index: u8, element: &[u8]) -> Result<Option<Vec<u8>>> {
        let r = self.ch.transmit(&Command::write_key_element(index, element))?;
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
        self.ch.exec(&Command::reset_key_group()).map(|_| ())
    }

    /// GENERATE KEY PAIR; returns the new encryption key.
    pub fn generate_key_pair(&mut self) -> Result<Vec<u8>> {
        let r = self.ch.transmit(&Command::generate_key_pair())?;
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

    /// TAKE OUT KEY towards `target`; returns the take-out blob.
    pub fn take_out_key(&mut self, target: &str) -> Result<Vec<u8>> {
        let r = self.ch.transmit(&Command::take_out_key(target))?;
        match r.sw {
            StatusWord::Ok => Ok(r.data),
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
        let r = self.ch.transmit(&Command::import_key(blob, expose_public_key))?;
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
        self.ch.exec(&Command::confirm_duplicate(receipt)).map(|_| ())
    }

    /// RELEASE DUPLICATE (admin session), with the target's DESTROY KEY
    /// receipt once a take-out has left the card (6985 without it).
    pub fn release_duplicate(&mut self, receipt: Option<&[u8]>) -> Result<()> {
        self.ch.exec(&Command::release_duplicate(receipt)).map(|_| ())
    }

    /// DESTROY KEY on a backup card: destroy the key imported from `source`
    /// and refuse its take-outs up to `counter`; returns the receipt
    /// (counter (4) || MAC (32)) for the source card's RELEASE DUPLICATE.
    pub fn destroy_key(&mut self, source: &str, counter: u32) -> Result<Vec<u8>> {
        let r = self.ch.exec(&Command::destroy_key(source, counter))?;
        if cardvault_proto::takeout::Receipt::parse(&r).is_none() {
            return Err(Error::Malformed {
                command: "DESTROY KEY",
                reason: format!(
                    "a receipt is {} bytes, the card sent {}",
                    cardvault_proto::takeout::Receipt::LEN,
                    r.len()
                ),
            });
        }
        Ok(r)
    }

    /// UNWRAP FILE KEY: the card opens a wrapped file key with its private key.
    pub fn unwrap_file_key(&mut self, aad: &[u8], wrapped: &[u8]) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        let r = self.ch.transmit(&Command::unwrap_file_key(aad, wrapped))?;
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
        self.ch.exec(&Command::set_peer_key(public)).map(|_| ())
    }

    pub fn rewrap_to_peer(&mut self, aad: &[u8], wrapped: &[u8]) -> Result<Vec<u8>> {
        self.ch.exec(&Command::rewrap_to_peer(aad, wrapped))
    }

    /// Key service variant (FIG. 28/29): set main keys made outside the card.
    /// The private key travels only wrapped to a transport key that the card
    /// made for this admin session and authenticated with the admin key.
    /// Returns the card's encryption key.
    pub fn set_service_key(&mut self, admin_key: &[u8], card_number: &str, private: &[u8]) -> Result<Vec<u8>> {
        let r = self.ch.exec(&Command::get_transport_key())?;
        if r.len() != 97 {
            return Err(Error::Malformed {
                command: "GET TRANSPORT KEY",
                reason: "answer is not 97 bytes".into(),
            });
        }
        let (public, mac) = r.split_at(65);
        let n = card_number.as_bytes();
        let expected = cardvault_proto::crypto::hmac_sha256(
            admin_key,
            &[proto::takeout::TRANSPORT_KEY_LABEL, &[n.len() as u8], n, public],
        )
        .map_err(|e| Error::Data(e.to_string()))?;
        if !openssl::memcmp::eq(&expected, mac) {
            return Err(Error::Data(
                "the transport key is not authenticated by this card's admin key; the key was not sent".into(),
            ));
        }
        let mut d = zeroize::Zeroizing::new([0u8; 32]);
        if private.len() != 32 {
            return Err(Error::Usage("the key service's private key must be 32 bytes".into()));
        }
        d.copy_from_slice(private);
        let mut aad = proto::takeout::KEY_SERVICE_LABEL.to_vec();
        aad.extend_from_slice(n);
        let wrapped = cardvault_proto::crypto::wrap_key(public, &d, &aad).map_err(|e| Error::Data(e.to_string()))?;
        let r = self.ch.transmit(&Command::set_main_key(&wrapped))?;
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
    let text = |t: u16| -> Result<String> {
        String::from_utf8(field(t)?.clone()).map_err(|_| malformed_status("non-UTF-8 text field"))
    };
    let v = field(tag::APPLET_VERSION)?;
    if v.len() != 2 {
        return Err(malformed_status("bad applet version"));
    }
    let tries = byte(tag::PIN_TRIES_LEFT)?;
    Ok(CardStatus {
        card_number: text(tag::CARD_NUMBER)?,
        role: CardRole::from(text(tag::ROLE)?.as_str()),
        applet_version: format!("{}.{}", v[0], v[1]),
        pin_tries_left: tries,
        pin_max_tries: byte(tag::PIN_MAX_TRIES)?,
        pin_blocked: tries == 0,
        issued: byte(tag::ISSUED)? != 0,
        member_number: text(tag::MEMBER_NUMBER).ok(),
        expiry: text(tag::EXPIRY).ok(),
        page_size: word(tag::PAGE_SIZE)?,
        page_count: word(tag::PAGE_COUNT)?,
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
    let elements_written: Vec<u8> = (0..size).filter(|i| bits & (1 << i) != 0).map(|i| i + 1).collect();
    let text = |t: u16| m.get(&t).map(|b| String::from_utf8_lossy(b).into_owned());
    let ex = m
        .get(&tag::EXPORT_STATUS)
        .ok_or_else(|| malformed_status("no export status"))?;
    if ex.len() < 7 || ex.len() != 7 + ex[6] as usize {
        return Err(malformed_status("bad export status"));
    }
    let target = String::from_utf8_lossy(&ex[7..]).into_owned();
    Ok(KeyState {
        group_size: size,
        group_complete: elements_written.len() == size as usize && size > 0,
        elements_written,
        check_value: m.get(&tag::KEY_GROUP_KCV).map(|k| to_hex(k)),
        key_origin: text(tag::KEY_ORIGIN)
            .map(|o| o.parse::<KeyOrigin>())
            .transpose()
            .map_err(|e| malformed_status(&e))?,
        public_key: m.get(&tag::PUBLIC_KEY).map(|p| to_hex(p)),
        source_card: text(tag::SOURCE_CARD),
        export: ExportStatus {
            take_outs: u32::from_be_bytes([ex[0], ex[1], ex[2], ex[3]]),
            state: ExportState::from_byte(ex[4]),
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
