//! The card client: one method per card command, with the card's answers
//! turned into typed values and errors.

use crate::apdu::{Channel, Command, StatusWord};
use crate::error::{Error, Result};
use applet_sim::proto::{self, tag};
use iso7816_tlv::ber::{Tag, Tlv, Value};
use serde::Serialize;

/// What `cardvault status` reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CardStatus {
    pub card_number: String,
    pub role: String,
    pub applet_version: String,
    pub pin_tries_left: u8,
    pub pin_max_tries: u8,
    pub pin_blocked: bool,
    pub page_size: u16,
    pub page_count: u16,
    pub extended_length: bool,
}

/// A cardvault card, reached through a channel.
pub struct CardClient<'a> {
    ch: Channel<'a>,
}

impl<'a> CardClient<'a> {
    pub fn new(ch: Channel<'a>) -> CardClient<'a> {
        CardClient { ch }
    }

    pub fn channel(&mut self) -> &mut Channel<'a> {
        &mut self.ch
    }

    /// SELECT the cardvault applet. A card without it gives [`Error::NotCardvault`].
    pub fn select(&mut self) -> Result<()> {
        let r = self.ch.transmit(&Command::select_aid(proto::AID))?;
        match r.sw {
            StatusWord::Ok => Ok(()),
            StatusWord::FileNotFound => Err(Error::NotCardvault(self.ch.reader().to_string())),
            sw => Err(Error::Card {
                command: "SELECT",
                sw,
            }),
        }
    }

    /// GET DATA of the card status template.
    pub fn status(&mut self) -> Result<CardStatus> {
        let raw = self.ch.exec(&Command::card_status())?;
        let malformed = |reason: &str| Error::Malformed {
            command: "GET DATA",
            reason: reason.to_string(),
        };
        let tlv = Tlv::from_bytes(&raw).map_err(|e| malformed(&format!("{e:?}")))?;
        let field = |t: u16| -> Result<Vec<u8>> {
            let want = Tag::try_from(t).map_err(|_| malformed("bad tag"))?;
            match tlv.find(&want).map(|t| t.value()) {
                Some(Value::Primitive(v)) => Ok(v.clone()),
                _ => Err(malformed(&format!("tag {t:04X} missing"))),
            }
        };
        let byte = |t: u16| -> Result<u8> {
            field(t)?
                .first()
                .copied()
                .ok_or_else(|| malformed("empty field"))
        };
        let word = |t: u16| -> Result<u16> {
            let v = field(t)?;
            (v.len() == 2)
                .then(|| u16::from_be_bytes([v[0], v[1]]))
                .ok_or_else(|| malformed("bad u16 field"))
        };
        let text = |t: u16| -> Result<String> {
            String::from_utf8(field(t)?).map_err(|_| malformed("non-UTF-8 text field"))
        };
        let v = field(tag::APPLET_VERSION)?;
        if v.len() != 2 {
            return Err(malformed("bad applet version"));
        }
        let tries = byte(tag::PIN_TRIES_LEFT)?;
        Ok(CardStatus {
            card_number: text(tag::CARD_NUMBER)?,
            role: text(tag::ROLE)?,
            applet_version: format!("{}.{}", v[0], v[1]),
            pin_tries_left: tries,
            pin_max_tries: byte(tag::PIN_MAX_TRIES)?,
            pin_blocked: tries == 0,
            page_size: word(tag::PAGE_SIZE)?,
            page_count: word(tag::PAGE_COUNT)?,
            extended_length: byte(tag::FLAGS)? & 1 != 0,
        })
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
    pub fn unblock_pin(
        &mut self,
        admin_key: &[u8],
        card_number: &str,
        new_pin: Option<&[u8]>,
    ) -> Result<()> {
        let challenge = self.ch.exec(&Command::get_challenge())?;
        let cryptogram = zeroize::Zeroizing::new(
            applet_sim::applet::admin_cryptogram(admin_key, &challenge, card_number).map_err(
                |e| Error::Io {
                    what: "computing the admin cryptogram".into(),
                    source: std::io::Error::other(e),
                },
            )?,
        );
        let r = self
            .ch
            .transmit(&Command::external_authenticate(&cryptogram))?;
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
        self.ch.exec(&Command::reset_retry_counter(new_pin))?;
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

fn pin_result(command: &'static str, sw: StatusWord) -> Result<()> {
    match sw {
        StatusWord::Ok => Ok(()),
        StatusWord::VerifyFailed { tries_left: 0 } | StatusWord::AuthMethodBlocked => {
            Err(Error::PinBlocked)
        }
        StatusWord::VerifyFailed { tries_left } => Err(Error::WrongPin { tries_left }),
        sw => Err(Error::Card { command, sw }),
    }
}
