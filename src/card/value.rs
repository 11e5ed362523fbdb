//! Card commands of the page backup and restore (Hitachi flow) and of the
//! value application: each one sends its APDU and turns the answer into a
//! typed value; status words the workflow must tell apart stay visible.

use super::{CardClient, Refusal};
use crate::apdu::{Command, Response, StatusWord};
use crate::error::{Error, Result};
use cardvault_proto::backup as bk;

/// Which backup BACKUP asks the card for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupRequest {
    /// A full backup, whatever the card holds.
    Full,
    /// Differential once the card has a base backup, full before.
    Auto,
}

/// One answer of BACKUP or BACKUP DATA.
#[derive(Debug)]
pub struct BackupBlock {
    pub data: Vec<u8>,
    /// The card has more blocks (`6310`); ask with BACKUP DATA.
    pub more: bool,
}

/// What the card said to BACKUP COMPLETE.
#[derive(Debug)]
pub enum Completion {
    /// The card cleared its change flags and advanced its base.
    Done,
    /// The card refused; the backup stays stored but not complete.
    Refused(Error),
}

/// Refusals of the backup and restore commands that the holder can act on.
fn backup_refusal(command: &'static str, sw: StatusWord) -> Error {
    match sw {
        StatusWord::SecurityStatusNotSatisfied => Refusal::PinRequired(command).into(),
        sw => Error::Card { command, sw },
    }
}

fn block(command: &'static str, r: Response) -> Result<BackupBlock> {
    match r.sw {
        StatusWord::Ok => Ok(BackupBlock {
            data: r.data,
            more: false,
        }),
        StatusWord::MoreBlocks => Ok(BackupBlock {
            data: r.data,
            more: true,
        }),
        sw => Err(backup_refusal(command, sw)),
    }
}

impl CardClient<'_> {
    /// BACKUP: the card seals its header and answers the first block.
    pub fn backup(&mut self, request: BackupRequest, time: u64) -> Result<BackupBlock> {
        let p1 = match request {
            BackupRequest::Full => bk::TYPE_FULL,
            BackupRequest::Auto => bk::BACKUP_AUTO,
        };
        let r = self.transmit(&Command::backup(p1, bk::MAX_BLOCK as u16, time))?;
        block("BACKUP", r)
    }

    /// BACKUP DATA: block number `index` (1 for the block after BACKUP's).
    pub fn backup_data(&mut self, index: u16) -> Result<BackupBlock> {
        let r = self.transmit(&Command::backup_data(index))?;
        block("BACKUP DATA", r)
    }

    /// BACKUP COMPLETE for backup `counter`: only after the vault holds it.
    pub fn backup_complete(&mut self, counter: u32) -> Result<Completion> {
        let r = self.transmit(&Command::backup_complete(counter))?;
        Ok(if r.sw.is_ok() {
            Completion::Done
        } else {
            Completion::Refused(backup_refusal("BACKUP COMPLETE", r.sw))
        })
    }

    /// GET RESTORE CHALLENGE: a fresh challenge the issuer's restore
    /// authorization must name (the card keeps it until used).
    pub fn restore_challenge(&mut self) -> Result<Vec<u8>> {
        let ch = self.exec(&Command::get_restore_challenge())?;
        if ch.len() != cardvault_proto::CHALLENGE_LEN {
            return Err(Error::Malformed {
                command: "GET RESTORE CHALLENGE",
                reason: format!(
                    "the challenge is {} bytes, not {}",
                    ch.len(),
                    cardvault_proto::CHALLENGE_LEN
                ),
            });
        }
        Ok(ch)
    }

    /// The card's certificate (DER X.509, GET DATA `BF21`), if it has one:
    /// the issuer checks it before authorizing a restore onto this card.
    pub fn card_certificate(&mut self) -> Result<Option<Vec<u8>>> {
        let r = self
            .ch
            .transmit(&Command::get_data(cardvault_proto::cert::TAG_CERTIFICATE_STORE))?;
        match r.sw {
            StatusWord::Ok => Ok(Some(r.data)),
            StatusWord::ReferenceDataNotFound => Ok(None),
            sw => Err(Error::Card {
                command: "GET DATA",
                sw,
            }),
        }
    }

    /// RESTORE: the header of one backup of the chain (P1: same card, other
    /// card, next in chain). Refusals come back as the card's status word.
    pub fn restore_begin(&mut self, p1: u8, override_rollback: bool, data: &[u8]) -> Result<StatusWord> {
        Ok(self.transmit(&Command::restore(p1, override_rollback, data))?.sw)
    }

    /// RESTORE DATA with one record; with `trailer`, the record is the last
    /// and travels with the backup's trailer.
    pub fn restore_record(&mut self, record: &[u8], trailer: Option<&[u8]>) -> Result<StatusWord> {
        let cmd = match trailer {
            Some(t) => Command::restore_last_record(record, t),
            None => Command::restore_record(record),
        };
        Ok(self.transmit(&cmd)?.sw)
    }

    /// RESTORE DATA with the trailer alone (a backup without records).
    pub fn restore_trailer(&mut self, trailer: &[u8]) -> Result<StatusWord> {
        Ok(self.transmit(&Command::restore_trailer(trailer))?.sw)
    }

    /// RESTORE COMPLETE: the card commits the staged pages in one write.
    pub fn restore_complete(&mut self) -> Result<Response> {
        self.transmit(&Command::restore_complete())
    }

    /// GET BALANCE of value application `app`.
    pub fn balance(&mut self, app: u8) -> Result<u32> {
        let raw = self.exec(&Command::get_balance(app))?;
        amount("GET BALANCE", raw)
    }

    /// GET LOAD CHALLENGE of value application `app`: the challenge the
    /// issuer's load authorization must name (the card keeps it until a
    /// CREDIT uses it).
    pub fn load_challenge(&mut self, app: u8) -> Result<Vec<u8>> {
        let ch = self.exec(&Command::get_load_challenge(app))?;
        if ch.len() != cardvault_proto::load::LOAD_CHALLENGE_LEN {
            return Err(Error::Malformed {
                command: "GET LOAD CHALLENGE",
                reason: format!(
                    "the challenge is {} bytes, not {}",
                    ch.len(),
                    cardvault_proto::load::LOAD_CHALLENGE_LEN
                ),
            });
        }
        Ok(ch)
    }

    /// CREDIT value application `app` with an issuer load authorization;
    /// returns the new balance.
    pub fn credit(&mut self, app: u8, auth: &cardvault_proto::load::LoadAuthorization) -> Result<u32> {
        let raw = self.exec(&Command::credit(app, auth))?;
        amount("CREDIT", raw)
    }

    /// DEBIT `amount` from value application `app`; returns the new balance.
    pub fn debit(&mut self, app: u8, amount_: u32) -> Result<u32> {
        let raw = self.exec(&Command::debit(app, amount_))?;
        amount("DEBIT", raw)
    }
}

fn amount(command: &'static str, raw: Vec<u8>) -> Result<u32> {
    let bytes: [u8; 4] = raw.try_into().map_err(|r: Vec<u8>| Error::Malformed {
        command,
        reason: format!("a balance is 4 bytes, the card sent {}", r.len()),
    })?;
    Ok(u32::from_be_bytes(bytes))
}

/// One application of the card's application table (GET DATA `DF30`): the
/// page range it owns and whether it holds value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Application {
    pub id: u8,
    pub name: String,
    pub first_page: u16,
    pub page_count: u16,
    /// A value application: its value is never restored from a backup.
    pub value: bool,
    /// Restored from a backup and not used since: the card resets its value
    /// before the next use (FIG. 20).
    pub restored: bool,
}

impl CardClient<'_> {
    /// The card's application table (GET DATA `DF30`; empty when it has none).
    pub fn applications(&mut self) -> Result<Vec<Application>> {
        let Some(v) = self.data_object(cardvault_proto::tag::APPLICATIONS)? else {
            return Ok(Vec::new());
        };
        parse_applications(&v).map_err(|reason| Error::Malformed {
            command: "GET DATA",
            reason,
        })
    }
}

/// Parse `DF30`: per application id (1) ‖ first page (2) ‖ page count (2) ‖
/// flags (1) ‖ name length (1) ‖ name.
fn parse_applications(mut d: &[u8]) -> std::result::Result<Vec<Application>, String> {
    let mut out = Vec::new();
    while !d.is_empty() {
        let [id, f0, f1, c0, c1, flags, n, rest @ ..] = d else {
            return Err("application table cut short".into());
        };
        let n = *n as usize;
        let name = rest.get(..n).ok_or("application name cut short")?;
        // Ids are one byte: a table that repeats one is not a table (and a
        // hostile card gets no loop of GET BALANCE out of it).
        if out.iter().any(|a: &Application| a.id == *id) {
            return Err(format!("application {id} listed twice"));
        }
        out.push(Application {
            id: *id,
            name: String::from_utf8_lossy(name).into_owned(),
            first_page: u16::from_be_bytes([*f0, *f1]),
            page_count: u16::from_be_bytes([*c0, *c1]),
            value: flags & 1 != 0,
            restored: flags & 2 != 0,
        });
        d = &rest[n..];
    }
    Ok(out)
}

#[cfg(test)]
mod application_table_tests {
    use super::parse_applications;

    #[test]
    fn the_application_table_parses_and_a_cut_one_is_refused() {
        let t = [1, 0, 0, 0, 4, 3, 5, b'p', b'u', b'r', b's', b'e', 2, 0, 4, 0, 32, 0, 0];
        let apps = parse_applications(&t).unwrap();
        assert_eq!(apps.len(), 2);
        assert_eq!((apps[0].id, apps[0].value, apps[0].restored), (1, true, true));
        assert_eq!(apps[0].name, "purse");
        assert_eq!((apps[1].first_page, apps[1].page_count, apps[1].value), (4, 32, false));
        assert!(parse_applications(&t[..t.len() - 1]).is_err());
        assert!(parse_applications(&t[..9]).is_err());
        let twice = [t.as_slice(), &t[..12]].concat();
        assert!(parse_applications(&twice).unwrap_err().contains("twice"));
    }
}
