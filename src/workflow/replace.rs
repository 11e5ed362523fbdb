//! The guided replacement of a lost or broken main card (`cardvault replace`):
//! the help desk's one job for "I lost my card", from the holder alone.
//!
//! Steps, in this order, each recorded in the replacement's state file
//! before the next one starts:
//!
//! 1. `mark-lost`: the holder's old main card is revoked in the audit trail
//!    (as `card revoke`), which the issuer requires before it authorizes a
//!    restore from it.
//! 2. `backups`: the old card's backups in the vault; the newest complete one
//!    (with its chain) is the one restored.
//! 3. `wallet`: the lost card's deposited wallet items (the vault's copies
//!    of their registration certificates) withdrawn from the safes given
//!    (`--safe`) onto the new card, with the issuer's authorization naming
//!    the new card when the terminal holds the issuer's signer
//!    (`workflow::deposit`). Without a safe the step says so and moves on.
//!    Resumed, the card's receipts are first sent to their safes (a
//!    withdrawal cut after the card took the item) and items the card holds
//!    are not asked for again: nothing is withdrawn twice.
//! 4. `request`: the new card's restore request (a fresh card challenge).
//! 5. `authorize`: the issuer's authorization: signed here when the terminal
//!    holds the issuer's signer, or read from the file the issuer signed;
//!    without either the job stops here, waiting, and is resumed later.
//! 6. `restore`: the chain restored onto the new card (RESTORE ... RESTORE
//!    COMPLETE, `workflow::backup`).
//! 7. `value`: each value application of the new card: a backup never brings
//!    value back (FIG. 20), so its balance is reported with the amount.
//! 8. `files`: the holder's encrypted files re-encrypted from the backup card
//!    to the new card (`workflow::files::recover_file`), when files are named.
//! 9. `new-backup`: a fresh backup card (issued with the new card's key 1)
//!    duplicated from the new card (`workflow::duplicate`), so the holder
//!    has a working pair again, when one is presented.
//!
//! Commit order and resuming: the state file is written (atomically, 0600)
//! after every step and before the restore sends the authorization, so a
//! stop anywhere resumes at the step that did not finish. Every step is
//! safe to run again: the revocation is recorded once, a request is reused
//! until its authorization was sent, an authorization that was sent is never
//! sent again (the card's challenge is spent; a new request is made, unless
//! the vault records that the restore completed), and a file already
//! encrypted to the new card is left as it is. The state file holds no
//! secret: card numbers, the request, the authorization (public), results.

use super::authorize::{is_revoked, revoke_card};
use super::backup::{self, RestoreAuthorization, RestoreJob, RestoreOutcome, RestoreRequest};
use super::{files, holders};
use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::safe::{SafeAddress, SafeClient};
use crate::secret::Secret;
use crate::vault::{AuditEvent, BackupState, Vault};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of [`ReplaceState`] in its file.
pub const STATE_VERSION: u32 = 1;

/// One step of the replacement, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    MarkLost,
    Backups,
    Wallet,
    Request,
    Authorize,
    Restore,
    Value,
    Files,
    NewBackup,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::MarkLost,
        Step::Backups,
        Step::Wallet,
        Step::Request,
        Step::Authorize,
        Step::Restore,
        Step::Value,
        Step::Files,
        Step::NewBackup,
    ];

    /// As the state file and the JSON output say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::MarkLost => "mark-lost",
            Step::Backups => "backups",
            Step::Wallet => "wallet",
            Step::Request => "request",
            Step::Authorize => "authorize",
            Step::Restore => "restore",
            Step::Value => "value",
            Step::Files => "files",
            Step::NewBackup => "new-backup",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    Pending,
    Done,
    /// Nothing to do (said why).
    Skipped,
    /// Stopped for someone else's part (the issuer's authorization).
    Waiting,
}

/// A step and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: Step,
    pub state: StepState,
    pub detail: String,
}

/// A backup of the lost card found in the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundBackup {
    pub id: i64,
    pub counter: u32,
    pub kind: String,
    pub pages: u32,
    pub created_at: String,
    /// `completed` or `stored` (the card never acknowledged it; not restored).
    pub state: String,
}

/// The pages restored onto the new card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredPages {
    pub backup_id: i64,
    pub chain: Vec<u32>,
    /// Pages the card wrote; `None` when an earlier run restored them and
    /// only the vault's record of it remains.
    pub pages_written: Option<u16>,
}

/// A value application of the new card after the restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueNote {
    pub app: u8,
    pub name: String,
    /// The new card's balance before the restore.
    pub before: u32,
    /// Its balance after (the card resets restored value before any use).
    pub after: Option<u32>,
}

/// One encrypted file of the holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileNote {
    pub path: PathBuf,
    /// `ok`, `already_recovered` or `failed`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A wallet item deposited from the lost card (a registration certificate
/// the vault keeps) and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletNote {
    /// Hex item id.
    pub item: String,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub amount: Option<u32>,
    /// Where it was deposited (a directory or an http:// address).
    pub safe: String,
    /// Hex safe id.
    pub safe_id: String,
    pub counter: u64,
    /// `withdrawn` (by this run), `already_withdrawn` (on the new card from
    /// an earlier run) or `not_withdrawn`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl WalletNote {
    fn of(c: &crate::vault::CertificateCopy, result: &str, reason: Option<String>) -> WalletNote {
        WalletNote {
            item: c.item_id.clone(),
            kind: c.kind.clone(),
            name: c.name.clone(),
            amount: c.amount,
            safe: c.safe_address.clone(),
            safe_id: c.safe_id.clone(),
            counter: c.safe_counter,
            result: result.to_string(),
            reason,
        }
    }

    fn label(&self) -> String {
        let mut what = Vec::new();
        what.extend(self.kind.clone());
        what.extend(self.name.as_ref().map(|n| format!("{n:?}")));
        what.extend(self.amount.map(|a| a.to_string()));
        format!(
            "item {}{}",
            self.item,
            if what.is_empty() {
                String::new()
            } else {
                format!(" ({})", what.join(" "))
            }
        )
    }
}

/// A replacement in progress or finished: what its state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceState {
    pub version: u32,
    /// The holder column of the holder file.
    pub holder: String,
    pub member_number: Option<String>,
    /// The main card being replaced.
    pub lost_card: String,
    /// The replacement card.
    pub new_card: String,
    pub reason: String,
    pub steps: Vec<StepRecord>,
    pub backups: Vec<FoundBackup>,
    /// The backup restored (the last of its chain), once chosen.
    pub backup_id: Option<i64>,
    pub request: Option<RestoreRequest>,
    pub authorization: Option<RestoreAuthorization>,
    /// The authorization was sent to the card: its challenge is spent.
    pub authorization_sent: bool,
    pub restored: Option<RestoredPages>,
    pub values: Vec<ValueNote>,
    pub files: Vec<FileNote>,
    /// The lost card's deposited wallet items, once the wallet step ran.
    #[serde(default)]
    pub wallet: Vec<WalletNote>,
    /// The backup card duplicated from the new card, once it is.
    #[serde(default)]
    pub new_backup: Option<String>,
    pub finished: bool,
}

impl ReplaceState {
    pub fn step(&self, s: Step) -> &StepRecord {
        self.steps
            .iter()
            .find(|r| r.step == s)
            .expect("every step has a record")
    }

    fn set(&mut self, s: Step, state: StepState, detail: impl Into<String>) {
        let r = self
            .steps
            .iter_mut()
            .find(|r| r.step == s)
            .expect("every step has a record");
        r.state = state;
        r.detail = detail.into();
    }

    fn next_pending(&self) -> Option<Step> {
        self.steps
            .iter()
            .find(|r| matches!(r.state, StepState::Pending | StepState::Waiting))
            .map(|r| r.step)
    }

    /// The holder as the help desk names them: member number, else name.
    pub fn holder_key(&self) -> &str {
        self.member_number.as_deref().unwrap_or(&self.holder)
    }

    /// What the new card got, one line each.
    pub fn restored_summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(r) = &self.restored {
            let chain: Vec<String> = r.chain.iter().map(|c| format!("#{c}")).collect();
            out.push(match r.pages_written {
                Some(n) => format!(
                    "pages: {n} written from card {}'s backup {}",
                    self.lost_card,
                    chain.join(" + ")
                ),
                None => format!(
                    "pages: card {}'s backup {} (restored by an earlier run)",
                    self.lost_card,
                    chain.join(" + ")
                ),
            });
        }
        for w in self.wallet.iter().filter(|w| w.result != "not_withdrawn") {
            out.push(format!(
                "wallet: {} withdrawn from safe {} onto the new card{}",
                w.label(),
                w.safe,
                if w.result == "already_withdrawn" {
                    " (by an earlier run)"
                } else {
                    ""
                }
            ));
        }
        let ok = self.files.iter().filter(|f| f.result != "failed").count();
        if ok > 0 {
            out.push(format!("files: {ok} encrypted to the new card"));
        }
        if let Some(b) = &self.new_backup {
            out.push(format!(
                "backup card: card {b} duplicated from the new card (a working pair again)"
            ));
        }
        out
    }

    /// What the new card did not get, and why, one line each.
    pub fn not_restored(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.restored.is_none() {
            out.push(format!("pages: {}", self.step(Step::Restore).detail));
        }
        for v in &self.values {
            out.push(format!(
                "{} (application {}): value is never restored from a backup; balance on the new card {} \
                 (the issuer loads the holder's value again)",
                v.name,
                v.app,
                v.after.map_or("unknown".to_string(), |a| a.to_string())
            ));
        }
        let w = self.step(Step::Wallet);
        if w.state == StepState::Skipped {
            out.push(format!("wallet: {}", w.detail));
        }
        for w in self.wallet.iter().filter(|w| w.result == "not_withdrawn") {
            out.push(format!(
                "wallet: {} in safe {}: {}",
                w.label(),
                w.safe,
                w.reason.as_deref().unwrap_or("not withdrawn")
            ));
        }
        for f in self.files.iter().filter(|f| f.result == "failed") {
            out.push(format!(
                "file {}: {}",
                f.path.display(),
                f.error.as_deref().unwrap_or("failed")
            ));
        }
        if self.step(Step::Files).state == StepState::Skipped {
            out.push(format!("encrypted files: {}", self.step(Step::Files).detail));
        }
        if self.step(Step::NewBackup).state == StepState::Skipped {
            out.push(format!("backup card: {}", self.step(Step::NewBackup).detail));
        }
        out
    }

    /// Whether the job stopped for the issuer's authorization.
    pub fn waiting(&self) -> bool {
        self.step(Step::Authorize).state == StepState::Waiting
    }
}

/// The replacement's state file: written atomically with mode 0600 after
/// every step.
#[derive(Debug, Clone)]
pub struct StateFile(pub PathBuf);

impl StateFile {
    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn load(&self) -> Result<ReplaceState> {
        let text =
            std::fs::read_to_string(&self.0).map_err(|e| Error::input(format!("reading {}", self.0.display()), e))?;
        let s: ReplaceState =
            serde_json::from_str(&text).map_err(|e| Error::Data(format!("{}: {e}", self.0.display())))?;
        if s.version != STATE_VERSION || s.steps.len() != Step::ALL.len() {
            return Err(Error::Data(format!(
                "{}: not a replacement state of version {STATE_VERSION}",
                self.0.display()
            )));
        }
        Ok(s)
    }

    pub fn save(&self, s: &ReplaceState) -> Result<()> {
        if let Some(dir) = self.0.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let text = serde_json::to_string_pretty(s).expect("state serializes");
        cardvault_proto::fsutil::atomic_write(&self.0, text.as_bytes())
            .map_err(|e| Error::io(format!("writing {}", self.0.display()), e))
    }
}

/// A replacement and the file it is kept in.
#[derive(Debug, Clone)]
pub struct Replacement {
    pub state: ReplaceState,
    pub file: StateFile,
}

/// Begin the replacement of `holder`'s main card by the card `new_card`:
/// the holder's newest main card other than `new_card` is the one replaced
/// (in use, or already marked lost).
pub fn start(vault: &Vault, holder: &str, new_card: &str, reason: &str) -> Result<ReplaceState> {
    let h = holders::find(vault, holder)?;
    let mains = || {
        h.cards
            .iter()
            .rev()
            .filter(|c| c.role == "main" && c.card_number != new_card)
    };
    let lost = mains()
        .find(|c| c.state == "active")
        .or_else(|| mains().next())
        .ok_or_else(|| {
            Error::Usage(format!(
                "holder {} has no main card other than card {new_card} to replace",
                h.holder
            ))
        })?;
    if let Some(c) = h.cards.iter().find(|c| c.card_number == new_card && c.role != "main") {
        return Err(Error::Usage(format!(
            "card {new_card} is holder {}'s {} card, not a replacement main card",
            h.holder, c.role
        )));
    }
    Ok(ReplaceState {
        version: STATE_VERSION,
        holder: h.holder.clone(),
        member_number: h.member_number.clone(),
        lost_card: lost.card_number.clone(),
        new_card: new_card.to_string(),
        reason: reason.to_string(),
        steps: Step::ALL
            .iter()
            .map(|s| StepRecord {
                step: *s,
                state: StepState::Pending,
                detail: String::new(),
            })
            .collect(),
        backups: Vec::new(),
        backup_id: None,
        request: None,
        authorization: None,
        authorization_sent: false,
        restored: None,
        values: Vec::new(),
        files: Vec::new(),
        wallet: Vec::new(),
        new_backup: None,
        finished: false,
    })
}

/// The issuer's signer, when this terminal holds the issuer's rights.
pub struct IssuerRights<'a> {
    pub signer: &'a crate::issuer::IssuerSigner,
    /// The issuer roots the new card's certificate must verify under.
    pub roots: &'a [openssl::x509::X509],
}

/// The holder's encrypted files, re-encrypted with the backup card.
pub struct FileRecovery<'a> {
    pub backup_pin: &'a [u8],
    pub files: &'a [PathBuf],
    /// Key group elements 2..n, for a new main card that has no key yet.
    pub elements: Option<&'a [Secret]>,
}

/// A fresh backup card for the new card: its PIN, and the key group
/// elements 2..n both cards get.
pub struct NewBackup<'a> {
    pub backup_pin: &'a [u8],
    pub elements: &'a [Secret],
}

/// What the clerk brings to this run of the job.
pub struct ReplaceJob<'a> {
    /// The new card's holder PIN.
    pub pin: &'a [u8],
    pub issuer: Option<IssuerRights<'a>>,
    /// The authorization the issuer signed for this replacement's request.
    pub authorization: Option<&'a RestoreAuthorization>,
    pub files: Option<FileRecovery<'a>>,
    pub new_backup: Option<NewBackup<'a>>,
    /// The safes the lost card's wallet items are withdrawn from (none: the
    /// wallet step is skipped).
    pub safes: &'a [SafeAddress],
}

/// What the job reports while it runs.
pub enum Event<'a> {
    /// A step begins (1-based index of [`Step::ALL`]).
    Step(Step, usize),
    /// Restore progress: blocks sent, blocks.
    Restore(u64, u64),
    /// A file is being re-encrypted.
    File(&'a Path),
}

/// Whether the vault records a completed restore of backup `backup_id` onto
/// `target` (an earlier run restored it and stopped before its state file
/// said so).
fn restore_recorded(vault: &Vault, target: &str, source: &str, backup_id: i64) -> Result<bool> {
    Ok(vault.audit_entries(Some(target))?.iter().any(|e| {
        e.event == "restore"
            && e.card == target
            && e.peer.as_deref() == Some(source)
            && e.result == "ok"
            && e.details["backup_id"].as_i64() == Some(backup_id)
    }))
}

/// Run the replacement from the first step that has not finished, saving
/// the state after each. `new` is the replacement card; `backup` the
/// holder's backup card (file recovery only). Returns with the state
/// finished, or waiting for the issuer's authorization.
pub fn run(
    new: &mut CardClient<'_>,
    mut backup: Option<&mut CardClient<'_>>,
    mut new_backup: Option<&mut CardClient<'_>>,
    vault: &mut Vault,
    r: &mut Replacement,
    job: &ReplaceJob<'_>,
    events: &dyn Fn(Event<'_>),
) -> Result<()> {
    let Replacement { state, file } = r;
    // What this run establishes on the new card (its status, the PIN
    // verified in its secure session, data read) serves every later step
    // of the same run; a resumed run in a new process reads it again.
    let mut facts = super::CardFacts::kept();
    // The balances before the restore were read in this run's session.
    let mut values_here = false;
    let number = facts.overview(new)?.0.card_number;
    if number != state.new_card {
        return Err(Error::Usage(format!(
            "the card presented is card {number}; this replacement of card {} is onto card {}",
            state.lost_card, state.new_card
        )));
    }
    // Recorded before the first step: a stop anywhere leaves a replacement
    // in progress that `--resume` finds.
    if !file.path().exists() {
        file.save(state)?;
    }
    while let Some(step) = state.next_pending() {
        let index = Step::ALL.iter().position(|s| *s == step).expect("a step") + 1;
        events(Event::Step(step, index));
        match step {
            Step::MarkLost => {
                let lost = state.lost_card.clone();
                if is_revoked(vault, &lost)? {
                    state.set(step, StepState::Done, format!("card {lost} was already marked lost"));
                } else {
                    let why = format!(
                        "{} (holder {}, replaced by card {})",
                        state.reason,
                        state.holder_key(),
                        state.new_card
                    );
                    let id = revoke_card(vault, &lost, &why)?;
                    state.set(
                        step,
                        StepState::Done,
                        format!("card {lost} marked lost and revoked (audit entry {id})"),
                    );
                }
            }
            Step::Backups => {
                let rows = vault.list_backups(Some(&state.lost_card))?;
                state.backups = rows
                    .iter()
                    .map(|b| FoundBackup {
                        id: b.id,
                        counter: b.counter,
                        kind: b.kind.to_string(),
                        pages: b.pages,
                        created_at: b.created_at.clone(),
                        state: match b.state {
                            BackupState::Completed => "completed".into(),
                            BackupState::Stored => "stored".into(),
                        },
                    })
                    .collect();
                let newest = rows
                    .iter()
                    .filter(|b| b.state == BackupState::Completed)
                    .max_by_key(|b| b.counter);
                match newest {
                    Some(b) => {
                        let chain: Vec<String> = vault.chain_to(b)?.iter().map(|c| format!("#{}", c.counter)).collect();
                        state.backup_id = Some(b.id);
                        state.set(
                            step,
                            StepState::Done,
                            format!(
                                "{} backup(s) of card {}; restoring {} (newest complete, {})",
                                rows.len(),
                                state.lost_card,
                                chain.join(" + "),
                                b.created_at
                            ),
                        );
                    }
                    None => {
                        let why = format!("the vault has no complete backup of card {}", state.lost_card);
                        state.set(step, StepState::Done, why.clone());
                        for s in [Step::Request, Step::Authorize, Step::Restore, Step::Value] {
                            state.set(s, StepState::Skipped, why.clone());
                        }
                    }
                }
            }
            Step::Wallet => {
                let copies = vault.wallet_certificates(Some(&state.lost_card))?;
                if job.safes.is_empty() {
                    let reason = "no safe given (--safe)".to_string();
                    state.wallet = copies
                        .iter()
                        .filter(|c| c.withdrawn_at.is_none())
                        .map(|c| WalletNote::of(c, "not_withdrawn", Some(reason.clone())))
                        .collect();
                    state.set(
                        step,
                        StepState::Skipped,
                        format!(
                            "no safe configured on this terminal; no wallet items were withdrawn{}",
                            match state.wallet.len() {
                                0 => String::new(),
                                n => format!(
                                    " ({n} deposited from card {} stay in their safes: `replace --safe S`)",
                                    state.lost_card
                                ),
                            }
                        ),
                    );
                } else {
                    withdraw_wallet(new, &mut facts, vault, state, job)?;
                    let total = state.wallet.len();
                    let on_card = state.wallet.iter().filter(|w| w.result != "not_withdrawn").count();
                    state.set(
                        step,
                        StepState::Done,
                        if total == 0 {
                            format!("the vault holds no wallet item deposited from card {}", state.lost_card)
                        } else {
                            format!(
                                "{on_card} of {total} wallet items of card {} on card {}",
                                state.lost_card, state.new_card
                            )
                        },
                    );
                }
            }
            Step::Request => {
                if state.request.is_none() {
                    let rj = RestoreJob {
                        from_card: Some(&state.lost_card),
                        backup_id: state.backup_id,
                        authorization: None,
                        request_only: true,
                        pin: job.pin,
                        rollback_issuer: None,
                        agreements: &[],
                    };
                    let RestoreOutcome::Requested(req) =
                        backup::run_restore_with(new, &mut facts, vault, &rj, &|_, _| {})?
                    else {
                        unreachable!("a request-only job answers with a request")
                    };
                    state.request = Some(req);
                    state.authorization = None;
                    state.authorization_sent = false;
                }
                let r = state.request.as_ref().expect("made above");
                state.set(
                    step,
                    StepState::Done,
                    format!(
                        "card {} backup #{} onto card {} (challenge {}...)",
                        r.source_card,
                        r.counter,
                        r.target_card,
                        &r.challenge[..8.min(r.challenge.len())]
                    ),
                );
            }
            Step::Authorize => {
                let req = state.request.clone().expect("the request step ran");
                if state.authorization.as_ref().is_some_and(|a| a.request == req) {
                    state.set(step, StepState::Done, "authorization at hand");
                } else if let Some(a) = job.authorization {
                    check_matches(&req, a)?;
                    state.authorization = Some(a.clone());
                    state.set(step, StepState::Done, "the issuer's authorization, from its file");
                } else if let Some(issuer) = &job.issuer {
                    super::authorize::check_restore_request(vault, &req, issuer.roots)?;
                    let a = backup::sign_authorization(&req, issuer.signer)?;
                    state.authorization = Some(a);
                    state.set(
                        step,
                        StepState::Done,
                        "signed on this terminal with the issuer's signer",
                    );
                } else {
                    state.set(
                        step,
                        StepState::Waiting,
                        "waiting for the issuer to sign the restore request (authorize-restore)",
                    );
                    file.save(state)?;
                    return Ok(());
                }
            }
            Step::Restore => {
                let backup_id = state.backup_id.expect("the backups step chose one");
                if state.authorization_sent {
                    if restore_recorded(vault, &state.new_card, &state.lost_card, backup_id)? {
                        let row = vault
                            .backup_row(backup_id)?
                            .ok_or(backup::RestoreRefusal::NoSuchBackup(backup_id))?;
                        state.restored = Some(RestoredPages {
                            backup_id,
                            chain: vault.chain_to(&row)?.iter().map(|b| b.counter).collect(),
                            pages_written: None,
                        });
                        state.set(
                            step,
                            StepState::Done,
                            "restored by an earlier run (recorded in the vault)",
                        );
                    } else {
                        // The authorization went to the card and its challenge is
                        // spent, whatever happened next: ask again.
                        state.request = None;
                        state.authorization = None;
                        state.authorization_sent = false;
                        state.set(Step::Request, StepState::Pending, "");
                        state.set(
                            Step::Authorize,
                            StepState::Pending,
                            "the earlier authorization was sent and its challenge is spent; a new request is needed",
                        );
                        file.save(state)?;
                        continue;
                    }
                } else {
                    state.values = value_balances(new)?;
                    values_here = true;
                    state.authorization_sent = true;
                    file.save(state)?;
                    let rj = RestoreJob {
                        from_card: Some(&state.lost_card),
                        backup_id: Some(backup_id),
                        authorization: state.authorization.as_ref(),
                        request_only: false,
                        pin: job.pin,
                        rollback_issuer: None,
                        agreements: &[],
                    };
                    let out =
                        backup::run_restore_with(new, &mut facts, vault, &rj, &|n, t| events(Event::Restore(n, t)))?;
                    let RestoreOutcome::Restored(rep) = out else {
                        unreachable!("a job with an authorization restores")
                    };
                    state.restored = Some(RestoredPages {
                        backup_id,
                        chain: rep.chain.clone(),
                        pages_written: Some(rep.pages_written),
                    });
                    state.set(
                        step,
                        StepState::Done,
                        format!(
                            "{} pages written onto card {}{}",
                            rep.pages_written,
                            state.new_card,
                            rep.left_out
                                .iter()
                                .map(|a| format!(
                                    "; left out: application {} ({}) of {}: {}",
                                    a.application, a.name, a.provider, a.reason
                                ))
                                .collect::<String>()
                        ),
                    );
                }
            }
            Step::Value => {
                // Read before the restore in this run, the list names only
                // applications the card has (the restore keeps the table).
                let apps = if values_here { Vec::new() } else { new.applications()? };
                for v in &mut state.values {
                    if values_here || apps.iter().any(|a| a.id == v.app) {
                        v.after = Some(new.balance(v.app)?);
                    }
                }
                if state.values.is_empty() {
                    state.set(step, StepState::Done, "the new card has no value application");
                } else {
                    let list: Vec<String> = state
                        .values
                        .iter()
                        .map(|v| format!("{} {}", v.name, v.after.map_or("?".to_string(), |a| a.to_string())))
                        .collect();
                    state.set(
                        step,
                        StepState::Done,
                        format!("value not restored (reset by the card): {}", list.join(", ")),
                    );
                }
            }
            Step::Files => match (&job.files, backup.as_deref_mut()) {
                (Some(fr), Some(bc)) if !fr.files.is_empty() => {
                    recover_files(new, &mut facts, bc, vault, state, fr, job.pin, events)?;
                    let failed = state.files.iter().filter(|f| f.result == "failed").count();
                    state.set(
                        step,
                        StepState::Done,
                        format!(
                            "{} of {} files encrypted to the new card{}",
                            state.files.len() - failed,
                            state.files.len(),
                            if failed > 0 {
                                format!(", {failed} failed")
                            } else {
                                String::new()
                            }
                        ),
                    );
                }
                _ => state.set(
                    step,
                    StepState::Skipped,
                    "none named (recovery needs the backup card and the files)",
                ),
            },
            Step::NewBackup => match (&job.new_backup, new_backup.as_deref_mut()) {
                (Some(nb), Some(bc)) => {
                    let opts = super::duplicate::DuplicateOptions {
                        main_pin: zeroize::Zeroizing::new(job.pin.to_vec()),
                        backup_pin: zeroize::Zeroizing::new(nb.backup_pin.to_vec()),
                        elements: nb.elements.to_vec(),
                        backup_gets_public_key: false,
                    };
                    let rep = super::duplicate::duplicate_with(new, &mut facts, bc, &opts, vault)?;
                    state.set(
                        step,
                        StepState::Done,
                        format!(
                            "card {} duplicated from card {} (check value {}, end-to-end check passed)",
                            rep.backup_card, rep.main_card, rep.check_value
                        ),
                    );
                    state.new_backup = Some(rep.backup_card);
                }
                _ => state.set(
                    step,
                    StepState::Skipped,
                    "no new backup card presented; the holder has no working backup card until one is duplicated",
                ),
            },
        }
        file.save(state)?;
    }
    if !state.finished {
        state.finished = true;
        vault.audit(AuditEvent {
            event: "replace",
            card: &state.new_card,
            peer: Some(&state.lost_card),
            result: "ok",
            details: serde_json::json!({
                "holder": state.holder,
                "member_number": state.member_number,
                "restored": state.restored.as_ref().map(|r| &r.chain),
                "files": state.files.len(),
            }),
        })?;
        file.save(state)?;
    }
    Ok(())
}

/// The issuer's authorization must be for this replacement's request: the
/// same source, backup, target and the card's outstanding challenge.
fn check_matches(req: &RestoreRequest, a: &RestoreAuthorization) -> Result<()> {
    let r = &a.request;
    if r.source_card != req.source_card || r.target_card != req.target_card || r.counter != req.counter {
        return Err(backup::RestoreRefusal::AuthorizationMismatch {
            auth_source: r.source_card.clone(),
            auth_counter: r.counter,
            auth_target: r.target_card.clone(),
            source_card: req.source_card.clone(),
            counter: req.counter,
            target: req.target_card.clone(),
        }
        .into());
    }
    if !r.challenge.eq_ignore_ascii_case(&req.challenge) || r.chain_hash != req.chain_hash {
        return Err(Error::Usage(format!(
            "the authorization is for an earlier request of card {} (another challenge, used or replaced since); \
             the issuer must sign this replacement's request",
            req.target_card
        )));
    }
    Ok(())
}

/// Withdraw the lost card's deposited items from `job.safes` onto the new
/// card: first the new card's receipts go to their safes (a withdrawal an
/// earlier run cut short after the card took the item), then every item
/// neither on the card nor withdrawn elsewhere is withdrawn, once each.
/// A safe's or the card's refusal is that item's reason; a pulled card or an
/// unreachable safe stops the job (resumed later).
fn withdraw_wallet(
    new: &mut CardClient<'_>,
    facts: &mut super::CardFacts,
    vault: &mut Vault,
    state: &mut ReplaceState,
    job: &ReplaceJob<'_>,
) -> Result<()> {
    use super::deposit::{self, IssuerWithdrawal};
    use cardvault_proto::safe::RegistrationCertificate;
    use cardvault_proto::to_hex;
    facts.verify_pin(new, job.pin)?;
    let mut safes: Vec<(SafeClient, String)> = Vec::new();
    for a in job.safes {
        let mut c = SafeClient::connect(a)?;
        let id = c.info()?.map_err(Error::SafeRefused)?.safe_id;
        safes.push((c, id));
    }
    let receipts = new.safe_receipts()?;
    // The new card's signing certificate, read once for every receipt.
    let mut signing = None;
    for (c, id) in safes.iter_mut() {
        for r in receipts.iter().filter(|r| to_hex(&r.safe_id) == *id) {
            deposit::send_receipt(new, c, vault, r, &mut signing)?;
        }
    }
    let held: Vec<String> = new.read_wallet()?.items.iter().map(|(_, i)| to_hex(&i.id)).collect();
    let mut notes = Vec::new();
    for copy in vault.wallet_certificates(Some(&state.lost_card))? {
        let note = if held.contains(&copy.item_id) || copy.withdrawn_to.as_deref() == Some(state.new_card.as_str()) {
            WalletNote::of(&copy, "already_withdrawn", None)
        } else if let Some(at) = &copy.withdrawn_at {
            WalletNote::of(
                &copy,
                "not_withdrawn",
                Some(format!(
                    "withdrawn onto card {} at {at}",
                    copy.withdrawn_to.as_deref().unwrap_or("?")
                )),
            )
        } else if let Some((safe, _)) = safes.iter_mut().find(|(_, id)| *id == copy.safe_id) {
            match &job.issuer {
                None => WalletNote::of(
                    &copy,
                    "not_withdrawn",
                    Some(
                        "onto another card than the depositor it needs the issuer's authorization                          (--issuer-key), or the owner's password (`wallet recover`)"
                            .into(),
                    ),
                ),
                Some(issuer) => {
                    let cert = cardvault_proto::from_hex(&copy.certificate)
                        .and_then(|c| RegistrationCertificate::parse(&c))
                        .ok_or_else(|| {
                            Error::Data(format!(
                                "the vault's certificate of item {} does not parse",
                                copy.item_id
                            ))
                        })?;
                    let auth = Some(IssuerWithdrawal { signer: issuer.signer });
                    match deposit::withdraw_certificate(new, &cert, safe, vault, auth, None, &mut signing) {
                        Ok(rep) => WalletNote::of(
                            &copy,
                            "withdrawn",
                            (!rep.settled).then(|| {
                                "on the card; the safe has not taken its receipt yet (`wallet resolve`)".to_string()
                            }),
                        ),
                        Err(Error::SafeRefused(r)) => WalletNote::of(&copy, "not_withdrawn", Some(r.to_string())),
                        Err(Error::CardRefusal(r)) => WalletNote::of(&copy, "not_withdrawn", Some(r.to_string())),
                        Err(e) => return Err(e),
                    }
                }
            }
        } else {
            WalletNote::of(
                &copy,
                "not_withdrawn",
                Some(format!(
                    "its safe ({}, id {}) was not given (--safe)",
                    copy.safe_address,
                    &copy.safe_id[..16.min(copy.safe_id.len())]
                )),
            )
        };
        notes.push(note);
    }
    state.wallet = notes;
    Ok(())
}

/// Balances of the new card's value applications (before the restore).
fn value_balances(card: &mut CardClient<'_>) -> Result<Vec<ValueNote>> {
    let mut out = Vec::new();
    for a in card.applications()?.into_iter().filter(|a| a.value) {
        out.push(ValueNote {
            app: a.id,
            before: card.balance(a.id)?,
            name: a.name,
            after: None,
        });
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn recover_files(
    new: &mut CardClient<'_>,
    facts: &mut super::CardFacts,
    bc: &mut CardClient<'_>,
    vault: &mut Vault,
    state: &mut ReplaceState,
    fr: &FileRecovery<'_>,
    pin: &[u8],
    events: &dyn Fn(Event<'_>),
) -> Result<()> {
    let bs = bc.status()?;
    if bs.role != crate::card::CardRole::Backup {
        return Err(Error::Refused(format!("card {} is not a backup card", bs.card_number)));
    }
    bc.verify_pin(fr.backup_pin)?;
    facts.verify_pin(new, pin)?;
    let (ns, nk) = facts.overview(new)?;
    let (public, after) = files::new_main_key_state(new, &ns.card_number, &nk, fr.elements)?;
    if nk.public_key.is_none() {
        facts.keys_changed(after);
    }
    state.files.clear();
    for path in fr.files {
        events(Event::File(path));
        let r = files::recover_file(bc, new, &public, path);
        let note = match &r {
            Ok(files::Recovery::Reencrypted(n)) => FileNote {
                path: path.clone(),
                result: "ok".into(),
                bytes: Some(*n),
                error: None,
            },
            Ok(files::Recovery::AlreadyRecovered) => FileNote {
                path: path.clone(),
                result: "already_recovered".into(),
                bytes: None,
                error: None,
            },
            Err(e) => FileNote {
                path: path.clone(),
                result: "failed".into(),
                bytes: None,
                error: Some(e.to_string()),
            },
        };
        vault.audit(AuditEvent {
            event: "recover-file",
            card: &state.new_card,
            peer: Some(&bs.card_number),
            result: match &r {
                Ok(files::Recovery::Reencrypted(_)) => "ok",
                Ok(files::Recovery::AlreadyRecovered) => "already encrypted to the new card",
                Err(_) => "failed",
            },
            details: serde_json::json!({ "file": path }),
        })?;
        // A pulled card stops the job (resumed later); a bad file is that file's failure.
        if let Err(e @ (Error::CardRemoved(_) | Error::CardTimeout { .. })) = r {
            return Err(e);
        }
        state.files.push(note);
    }
    Ok(())
}
