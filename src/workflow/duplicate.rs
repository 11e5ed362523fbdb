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

use super::issue::{Holder, IssueProfile, Role};
use super::station::{run_stations, Batch, CardSource, Station, StationEnv, StationEvent};
use crate::card::{CardClient, CardRole, ExportState};
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::transport::Reader;
use crate::vault::{AuditEvent, Vault};
use cardvault_proto::crypto;
use cardvault_proto::to_hex;
use serde::Serialize;
use serde_json::json;
use zeroize::Zeroizing;

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

/// Why a duplication stops before any key moves: the cards or the elements
/// given do not fit (checked before GENERATE KEY PAIR and TAKE OUT KEY).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DuplicateRefusal {
    #[error("the main and the backup reader hold the same card")]
    SameCard,
    #[error("card {card} is not an issued main card (role {role}, issued {issued})")]
    NotAnIssuedMainCard { card: String, role: CardRole, issued: bool },
    #[error("card {card} is not an issued backup card (role {role}, issued {issued})")]
    NotAnIssuedBackupCard { card: String, role: CardRole, issued: bool },
    #[error("key group sizes differ: main card {main} elements, backup card {backup}")]
    GroupSizesDiffer { main: u8, backup: u8 },
    #[error("the key group has {size} elements: give {need} element(s) (2..{size}), {given} given")]
    WrongElementCount { size: u8, need: usize, given: usize },
    #[error("a key group is still incomplete after writing its elements")]
    GroupIncomplete,
    #[error(
        "the two cards hold different key groups (check values {main} and {backup}); key 1 from issuance differs, \
         or an element was entered differently. No key was generated."
    )]
    KeyGroupsDiffer { main: String, backup: String },
    /// The main card's take-out names other cards or another key group than
    /// the two in the readers (the import is not attempted).
    #[error("the take-out blob is not bound to these two cards and this key group")]
    TakeOutNotBound,
    /// What the main card's public key locks, the backup card did not open.
    #[error("end-to-end check failed: the backup card opened a different key")]
    EndToEndCheckFailed,
}

/// How a duplication refusal is reported: the operator's input (the same
/// card twice, the wrong number of elements), a card, or data that failed
/// its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalClass {
    Usage,
    Card,
    Integrity,
}

impl DuplicateRefusal {
    pub fn class(&self) -> RefusalClass {
        use DuplicateRefusal::*;
        match self {
            SameCard | WrongElementCount { .. } => RefusalClass::Usage,
            TakeOutNotBound | EndToEndCheckFailed => RefusalClass::Integrity,
            NotAnIssuedMainCard { .. }
            | NotAnIssuedBackupCard { .. }
            | GroupSizesDiffer { .. }
            | GroupIncomplete
            | KeyGroupsDiffer { .. } => RefusalClass::Card,
        }
    }
}

pub fn duplicate(
    main: &mut CardClient<'_>,
    backup: &mut CardClient<'_>,
    opts: &DuplicateOptions,
    vault: &mut Vault,
) -> Result<DuplicateReport> {
    duplicate_with(main, &mut super::CardFacts::none(), backup, opts, vault)
}

/// [`duplicate`] with what the job already established on the main card
/// (its status, the PIN verified in its open session, a complete key group
/// it reported the check value of): nothing of it is asked or written again.
pub fn duplicate_with(
    main: &mut CardClient<'_>,
    main_facts: &mut super::CardFacts,
    backup: &mut CardClient<'_>,
    opts: &DuplicateOptions,
    vault: &mut Vault,
) -> Result<DuplicateReport> {
    // One GET DATA per card tells role, issuance, key group and export state.
    let (ms, mk) = main_facts.overview(main)?;
    // What follows changes the main card's key and export state.
    main_facts.keys_changed(None);
    let (bs, bk) = backup.overview()?;
    if ms.card_number == bs.card_number {
        return Err(DuplicateRefusal::SameCard.into());
    }
    if !ms.issued || !ms.role.holds_main_keys() {
        return Err(DuplicateRefusal::NotAnIssuedMainCard {
            card: ms.card_number,
            role: ms.role,
            issued: ms.issued,
        }
        .into());
    }
    if !bs.issued || bs.role != CardRole::Backup {
        return Err(DuplicateRefusal::NotAnIssuedBackupCard {
            card: bs.card_number,
            role: bs.role,
            issued: bs.issued,
        }
        .into());
    }
    if mk.group_size != bk.group_size {
        return Err(DuplicateRefusal::GroupSizesDiffer {
            main: mk.group_size,
            backup: bk.group_size,
        }
        .into());
    }
    let need = mk.group_size.saturating_sub(1) as usize;
    if opts.elements.len() != need {
        return Err(DuplicateRefusal::WrongElementCount {
            size: mk.group_size,
            need,
            given: opts.elements.len(),
        }
        .into());
    }

    // Step 1: PINs, then elements 2..n on both cards. The last write answers
    // with the group's check value.
    main_facts.verify_pin(main, &opts.main_pin)?;
    backup.verify_pin(&opts.backup_pin)?;
    // A complete group keeps its elements (a write answers 9000 and its
    // check value, changing nothing): one the job saw completed is not
    // written again.
    let known = mk
        .check_value
        .as_deref()
        .filter(|_| main_facts.keeps() && mk.group_complete)
        .and_then(cardvault_proto::from_hex);
    let (mut mkcv, mut bkcv) = (known.clone(), None);
    for (i, e) in opts.elements.iter().enumerate() {
        let n = i as u8 + 2;
        if known.is_none() {
            mkcv = main.write_key_element(n, e)?;
        }
        bkcv = backup.write_key_element(n, e)?;
    }
    if need == 0 {
        mkcv = main.key_group_kcv()?;
        bkcv = backup.key_group_kcv()?;
    }

    // Step 2: both groups complete and equal, compared by check value only.
    let (Some(mkcv), Some(bkcv)) = (mkcv, bkcv) else {
        return Err(DuplicateRefusal::GroupIncomplete.into());
    };
    if mkcv != bkcv {
        return Err(DuplicateRefusal::KeyGroupsDiffer {
            main: to_hex(&mkcv),
            backup: to_hex(&bkcv),
        }
        .into());
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
    let already = done.state == ExportState::Confirmed && done.target.as_deref() == Some(bs.card_number.as_str());
    let counter = if already {
        // A run cut between CONFIRM DUPLICATE and its audit entry: the card
        // reports the duplicate confirmed, and the trail must say so too.
        if !already_duplicated(vault, &ms.card_number, &bs.card_number)? {
            audit(
                vault,
                "confirm-duplicate",
                &ms.card_number,
                &bs.card_number,
                "ok",
                &kcv_hex,
                Some(done.take_outs),
            )?;
        }
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
        return Err(DuplicateRefusal::EndToEndCheckFailed.into());
    }
    vault.note_cards(&[(&ms.card_number, ms.role.as_str()), (&bs.card_number, bs.role.as_str())])?;
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
    // The main card wraps the key to the backup card's certified key: it gets
    // the backup card's certificate chain (from its secure session).
    let blob = match backup.certified_chain().and_then(|chain| main.take_out_key(&chain)) {
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
        return Err(DuplicateRefusal::TakeOutNotBound.into());
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

/// Whether the vault holds a confirmed duplication of `main` onto `backup`.
fn already_duplicated(vault: &Vault, main: &str, backup: &str) -> Result<bool> {
    Ok(vault
        .audit_entries(Some(main))?
        .iter()
        .any(|e| e.event == "confirm-duplicate" && e.result == "ok" && e.peer.as_deref() == Some(backup)))
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

/// Key group elements 2..n for a card whose group has `size` elements, made here.
pub fn generate_elements(size: u8) -> Vec<Secret> {
    (0..size.saturating_sub(1))
        .map(|_| Zeroizing::new(crypto::random::<32>().to_vec()))
        .collect()
}

/// Key group elements 2..n for a duplication.
pub enum Elements {
    /// Given by the operator (the same for every holder of a batch).
    Given(Vec<Secret>),
    /// Made here for the main card's group size, to be shown once.
    Generate,
    /// Made here per holder and handed to the keeper, which stores them
    /// durably before any card gets them; a rerun takes the kept ones, so a
    /// holder cut mid-way is resumed with the elements its cards already hold.
    GenerateKept(std::sync::Arc<dyn ElementKeeper>),
}

/// Where a batch keeps the elements it makes (the operator's
/// `--elements-out` file).
pub trait ElementKeeper: Send + Sync {
    /// The elements kept for `holder` by an earlier run, if any.
    fn kept(&self, holder: &str) -> Option<Vec<Secret>>;
    /// Store `elements` for `holder` durably; they go to no card before this returns.
    fn keep(&self, holder: &str, elements: &[Secret]) -> Result<()>;
}

/// One pair duplicated, with the elements made for it if they were generated here.
#[derive(Debug)]
pub struct PairDuplication {
    pub report: DuplicateReport,
    /// The elements 2..n made here (shown once); `None` when they were given.
    pub generated_elements: Option<Vec<Secret>>,
}

/// Duplicate `main` onto `backup` with the given or freshly made elements:
/// [`duplicate`], after choosing the elements.
pub fn duplicate_pair(
    main: &mut CardClient<'_>,
    backup: &mut CardClient<'_>,
    elements: &Elements,
    (main_pin, backup_pin): (Secret, Secret),
    backup_gets_public_key: bool,
    vault: &mut Vault,
) -> Result<PairDuplication> {
    let (elements, generated_elements) = match elements {
        Elements::Given(e) => (e.clone(), None),
        Elements::Generate => {
            let e = generate_elements(main.key_state()?.group_size);
            (e.clone(), Some(e))
        }
        Elements::GenerateKept(_) => {
            return Err(Error::Internal(
                "kept elements are resolved per holder by the batch".into(),
            ))
        }
    };
    let opts = DuplicateOptions {
        main_pin,
        backup_pin,
        elements,
        backup_gets_public_key,
    };
    Ok(PairDuplication {
        report: duplicate(main, backup, &opts, vault)?,
        generated_elements,
    })
}

/// What became of one holder of a batch.
#[derive(Debug)]
pub enum DuplicationOutcome {
    /// `generated_elements`: the elements made for this holder (shown once).
    Duplicated {
        report: DuplicateReport,
        generated_elements: Option<Vec<Secret>>,
    },
    /// A rerun found this pair duplicated already (the vault holds its
    /// confirmed take-out): nothing was sent to the cards.
    AlreadyDuplicated {
        main_card: String,
        backup_card: String,
    },
    Failed {
        reason: String,
    },
}

/// One holder of the batch report. Serialized as one row of
/// `duplicate --holders --json`'s `holders`.
#[derive(Debug)]
pub struct HolderDuplication {
    pub holder: String,
    /// 1-based station number, in the order of the stations; none if no
    /// station reached the holder.
    pub station: Option<usize>,
    pub outcome: DuplicationOutcome,
}

impl HolderDuplication {
    /// Duplicated now or by an earlier run: the holder needs nothing more.
    pub fn is_duplicated(&self) -> bool {
        matches!(
            self.outcome,
            DuplicationOutcome::Duplicated { .. } | DuplicationOutcome::AlreadyDuplicated { .. }
        )
    }

    /// The generated elements 2..n as hex, if this holder got fresh ones.
    pub fn generated_elements_hex(&self) -> Option<Vec<String>> {
        match &self.outcome {
            DuplicationOutcome::Duplicated {
                generated_elements: Some(g),
                ..
            } => Some(g.iter().map(|e| to_hex(e)).collect()),
            _ => None,
        }
    }
}

impl Serialize for HolderDuplication {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Row<'a> {
            holder: &'a str,
            station: Option<usize>,
            result: &'static str,
            reason: Option<&'a str>,
            #[serde(flatten)]
            report: Option<&'a DuplicateReport>,
            #[serde(flatten)]
            skipped: Option<Pair<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            generated_elements: Option<Vec<String>>,
        }
        #[derive(Serialize)]
        struct Pair<'a> {
            main_card: &'a str,
            backup_card: &'a str,
        }
        let (result, reason, report) = match &self.outcome {
            DuplicationOutcome::Duplicated { report, .. } => ("duplicated", None, Some(report)),
            DuplicationOutcome::Failed { reason } => ("failed", Some(reason.as_str()), None),
            DuplicationOutcome::AlreadyDuplicated { .. } => ("skipped", Some("already duplicated, skipped"), None),
        };
        let skipped = match &self.outcome {
            DuplicationOutcome::AlreadyDuplicated { main_card, backup_card } => Some(Pair { main_card, backup_card }),
            _ => None,
        };
        Row {
            holder: &self.holder,
            station: self.station,
            result,
            reason,
            report,
            skipped,
            generated_elements: self.generated_elements_hex(),
        }
        .serialize(s)
    }
}

/// The holder file columns a batch on `stations` needs: a PC/SC station
/// recognizes a holder by the main card's member number, so the file must
/// have them.
pub fn holder_profile(stations: &[Station]) -> IssueProfile {
    if stations
        .iter()
        .any(|s| s.main.as_ref().is_some_and(CardSource::is_pcsc))
    {
        IssueProfile::Pair
    } else {
        IssueProfile::Backup
    }
}

/// Duplicate the cards of every holder on `stations` in parallel. Given
/// elements serve every holder; generated ones are made per holder. Each
/// holder's cards use the PIN of the holder's row. A vault that cannot be
/// written stops the batch; any other failure is that holder's outcome. The
/// report lists the holders in file order, including those whose cards were
/// never presented.
pub fn duplicate_batch(
    env: &StationEnv<'_>,
    stations: &[Station],
    holders: &[Holder],
    elements: &Elements,
    backup_gets_public_key: bool,
) -> Result<Vec<HolderDuplication>> {
    if stations.iter().any(|s| s.main.is_none() || s.backup.is_none()) {
        return Err(Error::Usage(
            "every station needs a reader for main cards and one for backup cards".into(),
        ));
    }
    // Create (and migrate) the vault once, before the stations open their own.
    drop(env.vault()?);
    let outcomes = run_stations(stations, holders.len(), |number, station: &Station| {
        let mut vault = env.vault()?;
        let (Some(main_source), Some(backup_source)) = (station.source(Role::Main), station.source(Role::Backup))
        else {
            return Err(Error::Internal("a station has no main or no backup reader".into()));
        };
        Ok(move |batch: &Batch| -> Result<Option<(usize, HolderDuplication)>> {
            let (i, main) = match main_source {
                CardSource::Sim { .. } => {
                    let Some(i) = batch.take_next() else {
                        return Ok(None);
                    };
                    (i, main_source.issued_card(env, batch, &holders[i].id, Role::Main))
                }
                CardSource::Pcsc { .. } => {
                    let pick = |st: &crate::card::CardStatus| {
                        holders
                            .iter()
                            .position(|h| h.member_number.is_some() && h.member_number == st.member_number)
                            .filter(|i| batch.take(*i))
                    };
                    match main_source.recognized_card(env, batch, number, pick)? {
                        Some((i, r)) => (i, Ok(r)),
                        None => return Ok(None),
                    }
                }
            };
            let h = &holders[i];
            let outcome = match main {
                Ok(mut main_reader) => {
                    env.emit(StationEvent::Started {
                        holder: &h.id,
                        role: None,
                    });
                    let job = HolderJob {
                        env,
                        batch,
                        holder: h,
                        elements,
                        backup_gets_public_key,
                    };
                    job.run(main_reader.as_mut(), backup_source, &mut vault)?
                }
                Err(e) => DuplicationOutcome::Failed { reason: e.to_string() },
            };
            let record = HolderDuplication {
                holder: h.id.clone(),
                station: Some(number),
                outcome,
            };
            env.emit(StationEvent::Duplicated(&record));
            Ok(Some((i, record)))
        })
    })?;
    Ok(outcomes
        .into_iter()
        .zip(holders)
        .map(|(o, h)| {
            // Holders no station reached: their cards never came.
            o.unwrap_or_else(|| HolderDuplication {
                holder: h.id.clone(),
                station: None,
                outcome: DuplicationOutcome::Failed {
                    reason: if crate::workflow::station::interrupted() {
                        "not started: the run was interrupted".to_string()
                    } else {
                        format!("the holder's cards were not presented within {} s", env.wait.as_secs())
                    },
                },
            })
        })
        .collect())
}

/// One holder's duplication at a station that has the holder's main card.
struct HolderJob<'a> {
    env: &'a StationEnv<'a>,
    batch: &'a Batch,
    holder: &'a Holder,
    elements: &'a Elements,
    backup_gets_public_key: bool,
}

impl HolderJob<'_> {
    /// The elements for this holder's pair. With a keeper: the ones an earlier
    /// run kept for the holder, or new ones, kept before any card sees them
    /// (returned as made here).
    fn elements_for(&self, main: &mut CardClient<'_>) -> Result<(Elements, Option<Vec<Secret>>)> {
        let Elements::GenerateKept(keeper) = self.elements else {
            return Ok((
                match self.elements {
                    Elements::Given(e) => Elements::Given(e.clone()),
                    _ => Elements::Generate,
                },
                None,
            ));
        };
        let need = main.key_state()?.group_size.saturating_sub(1) as usize;
        if let Some(kept) = keeper.kept(&self.holder.id) {
            if kept.len() != need {
                return Err(Error::Usage(format!(
                    "the elements file holds {} element(s) for holder {}, its card's key group needs {need}",
                    kept.len(),
                    self.holder.id
                )));
            }
            return Ok((Elements::Given(kept), None));
        }
        let made = generate_elements(need as u8 + 1);
        keeper.keep(&self.holder.id, &made)?;
        Ok((Elements::Given(made.clone()), Some(made)))
    }

    /// Find the backup card and duplicate; only a vault failure is an error.
    fn run(
        &self,
        main_reader: &mut dyn Reader,
        backup_source: &CardSource,
        vault: &mut Vault,
    ) -> Result<DuplicationOutcome> {
        let h = self.holder;
        let mut backup_reader = match backup_source.issued_card(self.env, self.batch, &h.id, Role::Backup) {
            Ok(r) => r,
            Err(e) => return Ok(DuplicationOutcome::Failed { reason: e.to_string() }),
        };
        let outcome = CardClient::open(main_reader, self.env.session.clone()).and_then(|mut main| {
            let mut backup = CardClient::open(backup_reader.as_mut(), self.env.session.clone())?;
            // A rerun of an interrupted batch: a pair whose take-out the vault
            // saw confirmed is done; trying again would only be refused.
            let (main_card, backup_card) = (main.card_number()?, backup.card_number()?);
            if already_duplicated(vault, &main_card, &backup_card)? {
                return Ok(Err((main_card, backup_card)));
            }
            let pins = (h.pin.clone(), h.pin.clone());
            let (elements, made) = self.elements_for(&mut main)?;
            let mut done = duplicate_pair(
                &mut main,
                &mut backup,
                &elements,
                pins,
                self.backup_gets_public_key,
                vault,
            )?;
            if made.is_some() {
                done.generated_elements = made;
            }
            Ok(Ok(done))
        });
        match outcome {
            Ok(Err((main_card, backup_card))) => {
                self.batch.mark_handled(&main_card);
                self.batch.mark_handled(&backup_card);
                Ok(DuplicationOutcome::AlreadyDuplicated { main_card, backup_card })
            }
            Ok(Ok(PairDuplication {
                report,
                generated_elements,
            })) => {
                self.batch.mark_handled(&report.main_card);
                self.batch.mark_handled(&report.backup_card);
                Ok(DuplicationOutcome::Duplicated {
                    report,
                    generated_elements,
                })
            }
            Err(e @ Error::Vault { .. }) => Err(e),
            Err(e) => Ok(DuplicationOutcome::Failed { reason: e.to_string() }),
        }
    }
}

/// What `duplicate --replace-backup` did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReplacement {
    /// The lost backup card, recorded as revoked.
    pub lost_backup: String,
    /// The main key was destroyed and a new one generated in this run (the
    /// lost card may hold the old one).
    pub main_key_rotated: bool,
    /// The duplication onto the new backup card.
    pub duplicate: DuplicateReport,
}

/// The audit event of a main key rotated because its backup card was lost.
pub const MAIN_KEY_ROTATED: &str = "rotate-main-key";

/// A lost backup card replaced by a new one (issue 11's safe release): the
/// lost card cannot give the destroy receipt RELEASE DUPLICATE needs, so
/// the main key it may hold is destroyed instead. Order: the issuer
/// authenticates to the main card (SCP11a), the lost card is revoked in the
/// vault, RESET KEY GROUP destroys the main key and clears the export state,
/// its audit entry follows, then the ordinary duplication (FIG. 15) gives
/// the main card a new key and the new backup card its copy.
///
/// Run again after any interruption: the main card's export state says
/// where it stands (bound to the lost card: rotate; bound to the new card
/// or to none: duplicate, which itself resumes).
///
/// Files encrypted to the old main key open with neither card afterwards:
/// the holder decrypts them with the main card before.
pub fn replace_backup(
    main: &mut CardClient<'_>,
    new_backup: &mut CardClient<'_>,
    lost: &str,
    issuer: &crate::card::IssuerAuth,
    opts: &DuplicateOptions,
    vault: &mut Vault,
) -> Result<BackupReplacement> {
    let (ms, mk) = main.overview()?;
    let new_number = new_backup.card_number()?;
    if new_number == lost {
        return Err(DuplicateRefusal::SameCard.into());
    }
    let rotate = match mk.export.target.as_deref() {
        Some(t) if t == lost => true,
        None => false,
        Some(t) if t == new_number => false,
        Some(other) => {
            return Err(Error::Refused(format!(
                "main card {}'s key was duplicated onto card {other}, not card {lost}; nothing was changed",
                ms.card_number
            )))
        }
    };
    if rotate {
        main.issuer_authenticate(issuer, &ms.card_number)?;
        // The issuer's session is a new card session: the PIN again.
        main.verify_pin(&opts.main_pin)?;
        if !super::authorize::is_revoked(vault, lost)? {
            super::authorize::revoke_card(
                vault,
                lost,
                &format!("backup card lost; main card {}'s key rotated", ms.card_number),
            )?;
        }
        main.reset_key_group()?;
        vault.audit(AuditEvent {
            event: MAIN_KEY_ROTATED,
            card: &ms.card_number,
            peer: Some(lost),
            result: "ok",
            details: serde_json::json!({ "reason": "backup card lost", "new_backup": new_number }),
        })?;
    } else if !super::authorize::is_revoked(vault, lost)? {
        super::authorize::revoke_card(vault, lost, "backup card lost; replaced")?;
    }
    let duplicate = duplicate(main, new_backup, opts, vault)?;
    Ok(BackupReplacement {
        lost_backup: lost.to_string(),
        main_key_rotated: rotate,
        duplicate,
    })
}
