//! Duplication onto a backup card (FIG. 15, claim 7).
//!
//! 1. Verify the PIN on both cards and write key group elements 2..n to both.
//! 2. Confirm both writes succeeded and both groups have the same check value;
//!    only then does the main card generate its key pair.
//! 3. Take out the decryption key (encrypted under the group, bound to both
//!    card numbers) and import it on the backup card; the backup card's
//!    receipt confirms the one duplicate on the main card.
//! 4. End-to-end check: the backup card opens a key wrapped to the main
//!    card's public key.
//!
//! Every step is idempotent, so an interrupted run is simply run again.

use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::vault::{AuditEvent, Vault};
use cardvault_proto::crypto;
use cardvault_proto::to_hex;
use serde::Serialize;
use serde_json::json;

pub struct DuplicateOptions {
    pub main_pin: Secret,
    pub backup_pin: Secret,
    /// Key group elements 2..n, in order (32 bytes each).
    pub elements: Vec<Secret>,
    /// FIG. 26/27 variant: the backup card also gets (exposes) the encryption key.
    pub backup_gets_public_key: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DuplicateReport {
    pub main_card: String,
    pub backup_card: String,
    pub check_value: String,
    pub public_key: String,
    pub key_generated_now: bool,
    pub take_out_counter: u32,
    pub end_to_end_check: bool,
    pub backup_has_public_key: bool,
}

const CHECK_AAD: &[u8] = b"cardvault duplicate end-to-end check";

pub fn duplicate(
    main: &mut CardClient<'_>,
    backup: &mut CardClient<'_>,
    opts: &DuplicateOptions,
    vault: &mut Vault,
) -> Result<DuplicateReport> {
    // One GET DATA per card tells role, issuance, key group and export state.
    let (ms, mk) = main.overview()?;
    let (bs, bk) = backup.overview()?;
    if ms.card_number == bs.card_number {
        return Err(Error::Usage("the main and the backup reader hold the same card".into()));
    }
    if !ms.issued || !matches!(ms.role.as_str(), "main" | "replacement") {
        return Err(Error::Refused(format!(
            "card {} is not an issued main card (role {}, issued {})",
            ms.card_number, ms.role, ms.issued
        )));
    }
    if !bs.issued || bs.role != "backup" {
        return Err(Error::Refused(format!(
            "card {} is not an issued backup card (role {}, issued {})",
            bs.card_number, bs.role, bs.issued
        )));
    }
    if mk.group_size != bk.group_size {
        return Err(Error::Refused(format!(
            "key group sizes differ: main card {} elements, backup card {}",
            mk.group_size, bk.group_size
        )));
    }
    let need = mk.group_size.saturating_sub(1) as usize;
    if opts.elements.len() != need {
        return Err(Error::Usage(format!(
            "the key group has {} elements: give {need} element(s) (2..{}), {} given",
            mk.group_size,
            mk.group_size,
            opts.elements.len()
        )));
    }

    // Step 1: PINs, then elements 2..n on both cards. The last write answers
    // with the group's check value.
    main.verify_pin(&opts.main_pin)?;
    backup.verify_pin(&opts.backup_pin)?;
    let (mut mkcv, mut bkcv) = (None, None);
    for (i, e) in opts.elements.iter().enumerate() {
        let n = i as u8 + 2;
        mkcv = main.write_key_element(n, e)?;
        bkcv = backup.write_key_element(n, e)?;
    }
    if need == 0 {
        mkcv = main.key_group_kcv()?;
        bkcv = backup.key_group_kcv()?;
    }

    // Step 2: both groups complete and equal, compared by check value only.
    let (Some(mkcv), Some(bkcv)) = (mkcv, bkcv) else {
        return Err(Error::Refused(
            "a key group is still incomplete after writing its elements".into(),
        ));
    };
    if mkcv != bkcv {
        return Err(Error::Refused(format!(
            "the two cards hold different key groups (check values {} and {}); key 1 from issuance differs, \
             or an element was entered differently. No key was generated.",
            to_hex(&mkcv),
            to_hex(&bkcv)
        )));
    }
    let kcv_hex = to_hex(&mkcv);

    // Only now: the main key pair.
    let existing = mk.public_key.as_deref().and_then(cardvault_proto::from_hex);
    let (public, generated) = match existing {
        Some(p) => (p, false),
        None => (main.generate_key_pair()?, true),
    };

    // Step 3, unless a run cut after CONFIRM DUPLICATE already did it: the
    // duplicate exists; only the end-to-end check is left.
    let done = &mk.export;
    let already = done.state == "confirmed" && done.target.as_deref() == Some(bs.card_number.as_str());
    let counter = if already {
        done.take_outs
    } else {
        take_out_import_confirm(
            main,
            backup,
            opts,
            vault,
            (&ms.card_number, &bs.card_number),
            &mkcv,
            &kcv_hex,
        )?
    };

    // Step 4: what the main card's public key locks, the backup card opens.
    let probe = crypto::random::<32>();
    let wrapped = crypto::wrap_key(&public, &probe, CHECK_AAD).map_err(|e| Error::Data(e.to_string()))?;
    let opened = backup.unwrap_file_key(CHECK_AAD, &wrapped)?;
    if opened[..] != probe[..] {
        return Err(Error::Data(
            "end-to-end check failed: the backup card opened a different key".into(),
        ));
    }
    vault.note_card(&ms.card_number, &ms.role)?;
    vault.note_card(&bs.card_number, &bs.role)?;
    Ok(DuplicateReport {
        main_card: ms.card_number,
        backup_card: bs.card_number,
        check_value: kcv_hex,
        public_key: to_hex(&public),
        key_generated_now: generated,
        take_out_counter: counter,
        end_to_end_check: true,
        backup_has_public_key: opts.backup_gets_public_key || bk.public_key.is_some(),
    })
}

/// Step 3: take out, import, confirm. Returns the take-out counter.
fn take_out_import_confirm(
    main: &mut CardClient<'_>,
    backup: &mut CardClient<'_>,
    opts: &DuplicateOptions,
    vault: &mut Vault,
    (main_number, backup_number): (&str, &str),
    mkcv: &[u8],
    kcv_hex: &str,
) -> Result<u32> {
    let blob = match main.take_out_key(backup_number) {
        Ok(b) => b,
        Err(e) => {
            audit(
                vault,
                "take-out",
                main_number,
                backup_number,
                &format!("refused: {e}"),
                kcv_hex,
                None,
            )?;
            return Err(e);
        }
    };
    let info = cardvault_proto::takeout::takeout_info(&blob).ok_or_else(|| Error::Malformed {
        command: "TAKE OUT KEY",
        reason: "the take-out blob does not parse".into(),
    })?;
    if info.source != main_number || info.target != backup_number || info.kcv != mkcv {
        return Err(Error::Data(
            "the take-out blob is not bound to these two cards and this key group".into(),
        ));
    }
    audit(
        vault,
        "take-out",
        main_number,
        backup_number,
        "ok",
        kcv_hex,
        Some(info.counter),
    )?;
    let receipt = match backup.import_key(&blob, opts.backup_gets_public_key) {
        Ok(r) => r,
        Err(e) => {
            let result = format!("refused: {e}");
            audit(
                vault,
                "import",
                backup_number,
                main_number,
                &result,
                kcv_hex,
                Some(info.counter),
            )?;
            return Err(e);
        }
    };
    audit(
        vault,
        "import",
        backup_number,
        main_number,
        "ok",
        kcv_hex,
        Some(info.counter),
    )?;
    main.confirm_duplicate(&receipt)?;
    audit(
        vault,
        "confirm-duplicate",
        main_number,
        backup_number,
        "ok",
        kcv_hex,
        Some(info.counter),
    )?;
    Ok(info.counter)
}

fn audit(
    vault: &mut Vault,
    event: &str,
    card: &str,
    peer: &str,
    result: &str,
    kcv: &str,
    counter: Option<u32>,
) -> Result<()> {
    vault
        .audit(AuditEvent {
            event,
            card,
            peer: Some(peer),
            result,
            details: json!({ "check_value": kcv, "take_out_counter": counter }),
        })
        .map(|_| ())
}
