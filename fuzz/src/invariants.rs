//! Invariants on what the card *allowed*, checked on every exchange of
//! [`checked_tx`](crate::checked_tx) next to the refusal checks:
//!
//! - **access control**: a command that succeeds had, before it arrived, the
//!   session its handler requires (PIN verified, issuer admin authenticated,
//!   the operation in progress it continues) and, on a card whose profile
//!   requires the secure channel, it arrived under SCP11 secure messaging in
//!   an open secure session;
//! - **PIN tries**: a `63Cx` answer to a PIN attempt (VERIFY or CHANGE
//!   REFERENCE DATA with data) means the retry counter went down by exactly
//!   one, to x;
//! - **no rollback**: the newest backup counter the card has seen never goes
//!   down, and RESTORE COMPLETE never lands an own backup older than it
//!   unless the issuer's override was given at RESTORE (which itself needs
//!   the admin session).
//!
//! They are stated in terms of the card's state and session flags
//! ([`applet_sim::applet::SessionView`]), not of one command path, so they
//! hold whichever way a later profile or channel reaches the handler.

use applet_sim::applet::SessionView;
use applet_sim::CardState;
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::backup::RESTORE_OVERRIDE_ROLLBACK;
use cardvault_proto::{cla, scp11, to_hex, Ins};

/// What a command needs from the session before it may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    Pin,
    Admin,
    PinOrAdmin,
    /// PIN, and the admin session too when P2 asks for the rollback override.
    PinAndAdminForOverride,
    BackupInProgress,
    RestoreInProgress,
}

/// The access rule of a command (class without the chaining and secure
/// messaging bits), as docs/PROTOCOL.md states it.
pub fn needs(class: u8, ins: Ins, p1: u8) -> Needs {
    use Ins::*;
    match (class, ins) {
        (cla::ISO, PutData | ResetRetryCounter) => Needs::Admin,
        (
            cla::PROPRIETARY,
            EndPersonalization | ReleaseDuplicate | GetTransportKey | SetMainKey | GenerateEckaKey | GenerateSigningKey,
        ) => Needs::Admin,
        (cla::PROPRIETARY, WriteKeyElement) if p1 == 1 => Needs::Admin,
        (cla::PROPRIETARY, WriteKeyElement) => Needs::PinOrAdmin,
        (
            cla::PROPRIETARY,
            ReadMemory
            | WriteMemory
            | ResetKeyGroup
            | GenerateKeyPair
            | TakeOutKey
            | ImportKey
            | ConfirmDuplicate
            | UnwrapFileKey
            | SetPeerKey
            | RewrapToPeer
            | Backup
            | GetRestoreChallenge
            | GetLoadChallenge
            | DestroyKey
            | Credit
            | Debit
            | StoringRequest
            | StoreDataUnderAuthorization,
        ) => Needs::Pin,
        (cla::PROPRIETARY, Restore) => Needs::PinAndAdminForOverride,
        (cla::PROPRIETARY, BackupData | BackupComplete) => Needs::BackupInProgress,
        (cla::PROPRIETARY, RestoreData | RestoreComplete) => Needs::RestoreInProgress,
        _ => Needs::Nothing,
    }
}

/// Check one exchange: `session` and `before` as they were when `raw`
/// arrived, `after` the persistent state once it was answered with `sw`.
/// Returns the broken invariant.
pub fn check(session: &SessionView, before: &CardState, after: &CardState, raw: &[u8], sw: u16) -> Result<(), String> {
    if after.backup.newest_seen < before.backup.newest_seen {
        return Err(format!(
            "newest backup seen went down from {} to {}",
            before.backup.newest_seen, after.backup.newest_seen
        ));
    }
    let parsed = CommandApdu::parse(raw).ok();
    let ins = parsed.as_ref().and_then(|c| Ins::try_from(c.ins).ok());
    // Value comes only from its issuer: no command but a successful CREDIT
    // (which checked an issuer load authorization) raises a value.
    for a in before.applications.iter().filter(|a| a.value) {
        let at = a.first_page as usize * before.page_size as usize;
        let value = |s: &CardState| u32::from_be_bytes(s.memory[at..at + 4].try_into().expect("4 bytes"));
        let credited = ins == Some(Ins::Credit) && crate::is_success(sw);
        if value(after) > value(before) && !credited {
            return Err(format!(
                "the value of application {} went up from {} to {} without an authorized CREDIT",
                a.id,
                value(before),
                value(after)
            ));
        }
    }
    let (Some(c), Some(ins)) = (parsed, ins) else {
        return Ok(());
    };
    let protected = c.cla & scp11::CLA_SECURE_MESSAGING != 0;
    let class = c.cla & !(cla::CHAINING | scp11::CLA_SECURE_MESSAGING);
    if sw & 0xFFF0 == 0x63C0
        && class == cla::ISO
        && !protected
        && matches!(ins, Ins::Verify | Ins::ChangeReferenceData)
        && !c.data.is_empty()
    {
        let x = (sw & 0x0F) as u8;
        if before.pin.tries_left == 0 || after.pin.tries_left != before.pin.tries_left - 1 || after.pin.tries_left != x
        {
            return Err(format!(
                "{sw:04X} to a PIN attempt, but the tries went from {} to {}",
                before.pin.tries_left, after.pin.tries_left
            ));
        }
    }
    // A chained part is only accumulated (9000); the last part runs the command.
    if !crate::is_success(sw) || c.cla & cla::CHAINING != 0 {
        return Ok(());
    }
    let ok = match needs(class, ins, c.p1) {
        Needs::Nothing => true,
        Needs::Pin => session.pin_verified,
        Needs::Admin => session.admin_authenticated,
        Needs::PinOrAdmin => session.pin_verified || session.admin_authenticated,
        Needs::PinAndAdminForOverride => {
            session.pin_verified && (c.p2 & RESTORE_OVERRIDE_ROLLBACK == 0 || session.admin_authenticated)
        }
        Needs::BackupInProgress => session.backup_in_progress,
        Needs::RestoreInProgress => session.restore.is_some(),
    };
    if !ok {
        return Err(format!(
            "{} succeeded ({sw:04X}) without the session it needs ({:?}); session was {session:?}",
            ins.name(),
            needs(class, ins, c.p1)
        ));
    }
    if before.require_secure_channel
        && cardvault_proto::command_is_sensitive(c.cla, c.ins)
        && !(protected && session.secure_channel)
    {
        return Err(format!(
            "{} succeeded outside the secure channel on a card that requires it",
            ins.name()
        ));
    }
    if (class, ins) == (cla::PROPRIETARY, Ins::RestoreComplete) {
        if let Some(r) = session.restore {
            if !r.other_card && r.counter < before.backup.newest_seen && !r.override_rollback {
                return Err(format!(
                    "RESTORE COMPLETE landed backup #{} on a card that had seen #{}, without the override",
                    r.counter, before.backup.newest_seen
                ));
            }
        }
    }
    Ok(())
}

/// [`check`], panicking with the APDU on a broken invariant.
pub fn assert_allowed(session: &SessionView, before: &CardState, after: &CardState, raw: &[u8], sw: u16) {
    if let Err(e) = check(session, before, after, raw, sw) {
        panic!("APDU {} answered {sw:04X}: {e}", to_hex(raw));
    }
}

#[cfg(test)]
mod tests {
    //! Each invariant fires on the behaviour it forbids (states and session
    //! flags made up as a faulty card would leave them).
    use super::*;
    use crate::{apdu, ready_card, tx};

    fn main_state() -> CardState {
        ready_card("main").state().clone()
    }

    #[test]
    fn a_pin_command_that_succeeds_without_the_pin_is_caught() {
        let s = main_state();
        let take_out = apdu(0x80, 0xE4, 0, 0, b"FUZZ-BACKUP-0002", 256);
        let no_pin = SessionView::default();
        assert!(check(&no_pin, &s, &s, &take_out, 0x9000).is_err());
        assert!(check(&no_pin, &s, &s, &take_out, 0x6982).is_ok());
        let pin = SessionView {
            pin_verified: true,
            ..SessionView::default()
        };
        assert!(check(&pin, &s, &s, &take_out, 0x9000).is_ok());
        assert!(check(&no_pin, &s, &s, &take_out, 0x6100).is_err(), "61xx is a success");
        // A chained part's 9000 only says the part was taken.
        let mut part = take_out.clone();
        part[0] |= 0x10;
        assert!(check(&no_pin, &s, &s, &part, 0x9000).is_ok());
    }

    #[test]
    fn an_admin_command_that_succeeds_without_admin_authentication_is_caught() {
        let s = main_state();
        let pin = SessionView {
            pin_verified: true,
            ..SessionView::default()
        };
        let release = apdu(0x80, 0xE7, 0, 0, &[], 0);
        assert!(check(&pin, &s, &s, &release, 0x9000).is_err());
        let element1 = apdu(0x80, 0xE1, 1, 0, &[0; 32], 8);
        assert!(check(&pin, &s, &s, &element1, 0x9000).is_err());
        let element2 = apdu(0x80, 0xE1, 2, 0, &[0; 32], 8);
        assert!(check(&pin, &s, &s, &element2, 0x9000).is_ok());
        let override_restore = apdu(0x80, 0xF4, 0, RESTORE_OVERRIDE_ROLLBACK, &[0; 8], 0);
        assert!(check(&pin, &s, &s, &override_restore, 0x9000).is_err());
    }

    #[test]
    fn a_63cx_without_counting_down_is_caught_and_a_real_one_passes() {
        let mut card = ready_card("main");
        card.reset(); // the PIN is forgotten
        tx(&mut card, crate::SELECT);
        let before = card.state().clone();
        let session = card.session();
        let wrong = [0x00, 0x20, 0x00, 0x81, 0x04, b'9', b'9', b'9', b'9'];
        let (_, sw) = tx(&mut card, &wrong);
        assert_eq!(sw & 0xFFF0, 0x63C0);
        assert!(check(&session, &before, card.state(), &wrong, sw).is_ok());
        assert!(check(&session, &before, &before, &wrong, sw).is_err(), "no count-down");
        // The status query (VERIFY without data) answers 63Cx and counts nothing.
        let query = [0x00, 0x20, 0x00, 0x81];
        let s = card.state().clone();
        let (_, sw) = tx(&mut card, &query);
        assert!(check(&card.session(), &s, card.state(), &query, sw).is_ok());
    }

    #[test]
    fn a_rollback_without_the_override_is_caught() {
        let mut s = main_state();
        s.backup.newest_seen = 5;
        let complete = apdu(0x80, 0xF6, 0, 0, &[], 2);
        let restoring = |counter, override_rollback| SessionView {
            pin_verified: true,
            restore: Some(applet_sim::backup::RestoreView {
                counter,
                other_card: false,
                override_rollback,
            }),
            ..SessionView::default()
        };
        assert!(check(&restoring(4, false), &s, &s, &complete, 0x9000).is_err());
        assert!(check(&restoring(4, true), &s, &s, &complete, 0x9000).is_ok());
        assert!(check(&restoring(5, false), &s, &s, &complete, 0x9000).is_ok());
        let mut lower = s.clone();
        lower.backup.newest_seen = 4;
        assert!(check(&restoring(5, false), &s, &lower, &complete, 0x9000).is_err());
        assert!(check(&SessionView::default(), &s, &s, &complete, 0x9000).is_err());
    }

    #[test]
    fn a_sensitive_command_outside_a_required_secure_channel_is_caught() {
        let mut s = main_state();
        s.require_secure_channel = true;
        let session = SessionView {
            pin_verified: true,
            ..SessionView::default()
        };
        let debit = apdu(0x80, 0x54, 1, 0, &1u32.to_be_bytes(), 4);
        assert!(check(&session, &s, &s, &debit, 0x9000).is_err());
        let balance = apdu(0x80, 0x5C, 1, 0, &[], 4);
        assert!(check(&session, &s, &s, &balance, 0x9000).is_ok());
    }
}
