//! The cardvault command set: one constructor per card command, so the whole
//! set reads on one screen. Only the card client (this module's parent) uses
//! them; docs/PROTOCOL.md documents the same bytes.

use crate::apdu::Command;
use cardvault_proto::{self as proto, cla, tag, Ins};
use zeroize::Zeroizing;

impl Command {
    /// A command of the set, named after its instruction for traces and errors.
    fn of(cla: u8, ins: Ins, p1: u8, p2: u8) -> Command {
        Command::new(ins.name(), cla, ins.code(), p1, p2)
    }

    // --- ISO 7816-4 commands -------------------------------------------------

    pub fn select_aid(aid: &[u8]) -> Command {
        Command::of(cla::ISO, Ins::Select, 0x04, 0x00)
            .with_data(aid)
            .expect(256)
    }

    pub fn get_data(tag: u16) -> Command {
        let [p1, p2] = tag.to_be_bytes();
        Command::of(cla::ISO, Ins::GetData, p1, p2).expect(256)
    }

    pub fn card_status() -> Command {
        Command::get_data(tag::CARD_STATUS)
    }

    pub fn verify_pin(pin: &[u8]) -> Command {
        Command::of(cla::ISO, Ins::Verify, 0x00, proto::PIN_REF).with_data(pin)
    }

    /// VERIFY without data: asks for the PIN status (tries left).
    pub fn pin_status() -> Command {
        Command::of(cla::ISO, Ins::Verify, 0x00, proto::PIN_REF)
    }

    pub fn change_pin(old: &[u8], new: &[u8]) -> Command {
        let mut data = Zeroizing::new(Vec::with_capacity(1 + old.len() + new.len()));
        data.push(old.len() as u8);
        data.extend_from_slice(old);
        data.extend_from_slice(new);
        let mut c = Command::of(cla::ISO, Ins::ChangeReferenceData, 0x00, proto::PIN_REF);
        c.data = data;
        c
    }

    /// RESET RETRY COUNTER; with a new PIN (P1=02) or counter only (P1=03).
    pub fn reset_retry_counter(new_pin: Option<&[u8]>) -> Command {
        match new_pin {
            Some(pin) => Command::of(cla::ISO, Ins::ResetRetryCounter, 0x02, proto::PIN_REF).with_data(pin),
            None => Command::of(cla::ISO, Ins::ResetRetryCounter, 0x03, proto::PIN_REF),
        }
    }

    pub fn get_challenge() -> Command {
        Command::of(cla::ISO, Ins::GetChallenge, 0, 0).expect(proto::CHALLENGE_LEN)
    }

    // --- cardvault proprietary commands (CLA 80) ------------------------------

    /// READ MEMORY of `len` bytes (1..=65535): the length travels in the data
    /// field, so a reader limited to short APDUs still gets it all through
    /// GET RESPONSE.
    pub fn read_memory(page: u16, len: u16) -> Command {
        let [p1, p2] = page.to_be_bytes();
        Command::of(cla::PROPRIETARY, Ins::ReadMemory, p1, p2)
            .with_data(&len.to_be_bytes())
            .expect(len as usize)
    }

    pub fn write_memory(page: u16, data: &[u8]) -> Command {
        let [p1, p2] = page.to_be_bytes();
        Command::of(cla::PROPRIETARY, Ins::WriteMemory, p1, p2).with_data(data)
    }

    // --- issuance and key groups -------------------------------------------------

    pub fn put_data(tag: u16, data: &[u8]) -> Command {
        let [p1, p2] = tag.to_be_bytes();
        Command::of(cla::ISO, Ins::PutData, p1, p2).with_data(data)
    }

    /// LOAD DOMAIN KEY: the issuer domain's card-common key (secret data).
    pub fn load_domain_key(data: &[u8]) -> Command {
        Command::of(cla::PROPRIETARY, Ins::LoadDomainKey, 0, 0).with_data(data)
    }

    /// GENERATE ECKA KEY: a new SCP11 key pair for the registration
    /// certificate (issuer session); the answer is its public key.
    pub fn generate_ecka_key() -> Command {
        Command::of(cla::PROPRIETARY, Ins::GenerateEckaKey, 0, 0).expect(65)
    }

    /// GENERATE SIGNING KEY: a new signing key pair for the card's signing
    /// key certificate (issuer session); the answer is its public key.
    pub fn generate_signing_key() -> Command {
        Command::of(cla::PROPRIETARY, Ins::GenerateSigningKey, 0, 0).expect(65)
    }

    pub fn end_personalization() -> Command {
        Command::of(cla::PROPRIETARY, Ins::EndPersonalization, 0, 0)
    }

    pub fn write_key_element(index: u8, element: &[u8]) -> Command {
        Command::of(cla::PROPRIETARY, Ins::WriteKeyElement, index, 0)
            .with_data(element)
            .expect(8)
    }

    pub fn reset_key_group() -> Command {
        Command::of(cla::PROPRIETARY, Ins::ResetKeyGroup, 0, 0)
    }

    pub fn generate_key_pair() -> Command {
        Command::of(cla::PROPRIETARY, Ins::GenerateKeyPair, 0, 0).expect(65)
    }

    /// TAKE OUT KEY to the card whose certificate chain (DER certificates,
    /// leaf last, as GET DATA `BF21` returns it) is `target_chain`.
    pub fn take_out_key(target_chain: &[u8]) -> Command {
        Command::of(cla::PROPRIETARY, Ins::TakeOutKey, 0, 0)
            .with_data(target_chain)
            .expect_max()
    }

    pub fn import_key(blob: &[u8], expose_public_key: bool) -> Command {
        Command::of(cla::PROPRIETARY, Ins::ImportKey, expose_public_key as u8, 0)
            .with_data(blob)
            .expect(36)
    }

    pub fn confirm_duplicate(receipt: &[u8]) -> Command {
        Command::of(cla::PROPRIETARY, Ins::ConfirmDuplicate, 0, 0).with_data(receipt)
    }

    /// RELEASE DUPLICATE, with the bound target's DESTROY KEY receipt and
    /// that card's signing certificate when a take-out has left the card.
    pub fn release_duplicate(proof: Option<(&cardvault_proto::takeout::DestroyReceipt, &[u8])>) -> Command {
        let c = Command::of(cla::PROPRIETARY, Ins::ReleaseDuplicate, 0, 0);
        match proof {
            Some((r, certificate)) => c.with_data(&cardvault_proto::takeout::encode_release(r, certificate)),
            None => c,
        }
    }

    /// DESTROY KEY on a backup card: data = counter (4) || source card number.
    pub fn destroy_key(source: &str, counter: u32) -> Command {
        let mut data = counter.to_be_bytes().to_vec();
        data.extend_from_slice(source.as_bytes());
        Command::of(cla::PROPRIETARY, Ins::DestroyKey, 0, 0)
            .with_data(&data)
            .expect(cardvault_proto::takeout::DestroyReceipt::LEN)
    }

    fn with_aad_and_wrapped(ins: Ins, aad: &[u8], wrapped: &[u8], ne: usize) -> Command {
        let mut data = Vec::with_capacity(1 + aad.len() + wrapped.len());
        data.push(aad.len() as u8);
        data.extend_from_slice(aad);
        data.extend_from_slice(wrapped);
        Command::of(cla::PROPRIETARY, ins, 0, 0).with_data(&data).expect(ne)
    }

    pub fn unwrap_file_key(aad: &[u8], wrapped: &[u8]) -> Command {
        Command::with_aad_and_wrapped(Ins::UnwrapFileKey, aad, wrapped, 32)
    }

    pub fn rewrap_to_peer(aad: &[u8], wrapped: &[u8]) -> Command {
        Command::with_aad_and_wrapped(Ins::RewrapToPeer, aad, wrapped, 256)
    }

    pub fn set_peer_key(public: &[u8]) -> Command {
        Command::of(cla::PROPRIETARY, Ins::SetPeerKey, 0, 0).with_data(public)
    }

    pub fn get_transport_key() -> Command {
        Command::of(cla::PROPRIETARY, Ins::GetTransportKey, 0, 0).expect(65)
    }

    pub fn set_main_key(wrapped: &[u8]) -> Command {
        Command::of(cla::PROPRIETARY, Ins::SetMainKey, 0, 0)
            .with_data(wrapped)
            .expect(65)
    }

    // --- page backup and restore, value applications -------------------------------

    /// BACKUP: P1 = 00 full, 01 differential, 02 the card decides (differential
    /// once it has a base); data = block size (2) || time (8, UNIX seconds).
    pub fn backup(p1: u8, block: u16, time: u64) -> Command {
        let mut data = block.to_be_bytes().to_vec();
        data.extend_from_slice(&time.to_be_bytes());
        Command::of(cla::PROPRIETARY, Ins::Backup, p1, 0)
            .with_data(&data)
            .expect_max()
    }

    pub fn backup_data(index: u16) -> Command {
        let [p1, p2] = index.to_be_bytes();
        Command::of(cla::PROPRIETARY, Ins::BackupData, p1, p2).expect_max()
    }

    pub fn backup_complete(counter: u32) -> Command {
        Command::of(cla::PROPRIETARY, Ins::BackupComplete, 0, 0).with_data(&counter.to_be_bytes())
    }

    pub fn get_restore_challenge() -> Command {
        Command::of(cla::PROPRIETARY, Ins::GetRestoreChallenge, 0, 0).expect(16)
    }

    pub fn restore(p1: u8, override_rollback: bool, data: &[u8]) -> Command {
        Command::of(cla::PROPRIETARY, Ins::Restore, p1, override_rollback as u8).with_data(data)
    }

    pub fn restore_record(record: &[u8]) -> Command {
        Command::of(cla::PROPRIETARY, Ins::RestoreData, 0, 0).with_data(record)
    }

    /// The last record of a backup together with its trailer (RESTORE DATA P1 = 02).
    pub fn restore_last_record(record: &[u8], trailer: &[u8]) -> Command {
        let mut data = record.to_vec();
        data.extend_from_slice(trailer);
        Command::of(cla::PROPRIETARY, Ins::RestoreData, 2, 0).with_data(&data)
    }

    pub fn restore_trailer(trailer: &[u8]) -> Command {
        Command::of(cla::PROPRIETARY, Ins::RestoreData, 1, 0).with_data(trailer)
    }

    /// A provider's agreement to the restore in progress (RESTORE DATA P1 = 03).
    pub fn restore_agreement(data: &[u8]) -> Command {
        Command::of(
            cla::PROPRIETARY,
            Ins::RestoreData,
            cardvault_proto::backup::RESTORE_DATA_AGREEMENT,
            0,
        )
        .with_data(data)
    }

    pub fn restore_complete() -> Command {
        Command::of(cla::PROPRIETARY, Ins::RestoreComplete, 0, 0).expect(2)
    }

    pub fn get_balance(app: u8) -> Command {
        Command::of(cla::PROPRIETARY, Ins::GetBalance, app, 0).expect(4)
    }

    pub fn get_load_challenge(app: u8) -> Command {
        Command::of(cla::PROPRIETARY, Ins::GetLoadChallenge, app, 0).expect(16)
    }

    /// CREDIT with the issuer's load authorization (amount || signature).
    pub fn credit(app: u8, auth: &cardvault_proto::load::LoadAuthorization) -> Command {
        Command::of(cla::PROPRIETARY, Ins::Credit, app, 0)
            .with_data(&auth.encode())
            .expect(4)
    }

    /// CREDIT with an amount alone: what a terminal without an issuer
    /// authorization would send (the card refuses it; tests).
    pub fn credit_unauthorized(app: u8, amount: u32) -> Command {
        Command::of(cla::PROPRIETARY, Ins::Credit, app, 0)
            .with_data(&amount.to_be_bytes())
            .expect(4)
    }

    /// STORING REQUEST for application `app`: the card signs the SDI with a
    /// fresh challenge (proto::storing).
    pub fn storing_request(app: u8, sdi: &cardvault_proto::storing::StoringDataInfo) -> Command {
        Command::of(cla::PROPRIETARY, Ins::StoringRequest, app, 0)
            .with_data(&sdi.encode())
            .expect_max()
    }

    /// STORE DATA UNDER AUTHORIZATION: len (2) || authorization || data.
    pub fn store_data_under_authorization(app: u8, authorization: &[u8], data: &[u8]) -> Command {
        let mut d = (authorization.len() as u16).to_be_bytes().to_vec();
        d.extend_from_slice(authorization);
        d.extend_from_slice(data);
        Command::of(cla::PROPRIETARY, Ins::StoreDataUnderAuthorization, app, 0).with_data(&d)
    }

    pub fn debit(app: u8, amount: u32) -> Command {
        Command::of(cla::PROPRIETARY, Ins::Debit, app, 0)
            .with_data(&amount.to_be_bytes())
            .expect(4)
    }

    /// GET WALLET CHALLENGE: the challenge an item load must name.
    pub fn get_wallet_challenge() -> Command {
        Command::of(cla::PROPRIETARY, Ins::GetWalletChallenge, 0, 0).expect(16)
    }

    /// LOAD ITEM with the issuer's signature (proto::wallet::ItemLoad).
    pub fn load_item(load: &cardvault_proto::wallet::ItemLoad) -> Command {
        Command::of(cla::PROPRIETARY, Ins::LoadItem, 0, 0).with_data(&load.encode())
    }

    /// READ WALLET: capacity and every item with its state.
    pub fn read_wallet() -> Command {
        Command::of(cla::PROPRIETARY, Ins::ReadWallet, 0, 0).expect_max()
    }

    /// SPEND `amount` of item `id`.
    pub fn spend(id: &[u8; cardvault_proto::wallet::ITEM_ID_LEN], amount: u32) -> Command {
        Command::of(cla::PROPRIETARY, Ins::Spend, 0, 0)
            .with_data(&cardvault_proto::wallet::spend_data(id, amount))
            .expect(4)
    }

    /// DEPOSIT P1 = 00: seal and sign item `id` for safe `safe_id`, with the
    /// summary fields of `mask` (proto::safe::summary_field).
    pub fn deposit_begin(id: &[u8; cardvault_proto::wallet::ITEM_ID_LEN], mask: u8, safe_id: &[u8; 16]) -> Command {
        let mut d = id.to_vec();
        d.push(mask);
        d.extend_from_slice(safe_id);
        Command::of(cla::PROPRIETARY, Ins::Deposit, 0, 0)
            .with_data(&d)
            .expect_max()
    }

    /// DEPOSIT P1 = 01: the safe's registration certificate and its certificate.
    pub fn deposit_complete(data: &[u8]) -> Command {
        Command::of(cla::PROPRIETARY, Ins::Deposit, 1, 0).with_data(data)
    }

    pub fn get_withdraw_challenge() -> Command {
        Command::of(cla::PROPRIETARY, Ins::GetWithdrawChallenge, 0, 0).expect(16)
    }

    /// WITHDRAW: a safe's delivery (proto::safe::WithdrawCommand).
    pub fn withdraw(data: &[u8]) -> Command {
        Command::of(cla::PROPRIETARY, Ins::Withdraw, 0, 0)
            .with_data(data)
            .expect_max()
    }

    /// READ SAFE RECORDS: P1 = 00 certificates, 01 receipts.
    pub fn read_safe_records(p1: u8) -> Command {
        Command::of(cla::PROPRIETARY, Ins::ReadSafeRecords, p1, 0).expect_max()
    }

    /// ESCROW P1 = 00 (export `count` parts under `escrow_key`), 01 (import
    /// parts), 02 (a new wallet key).
    pub fn escrow(p1: u8, data: &[u8]) -> Command {
        let c = Command::of(cla::PROPRIETARY, Ins::Escrow, p1, 0).expect_max();
        if data.is_empty() {
            c
        } else {
            c.with_data(data)
        }
    }
}
