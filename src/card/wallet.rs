//! Card commands of the electronic wallet (docs/PROTOCOL.md 2.40-2.43): each
//! sends its APDU and turns the answer into a typed value or a [`Refusal`].

use super::{CardClient, Refusal};
use crate::apdu::{Command, StatusWord};
use crate::error::{Error, Result};
use cardvault_proto::safe::{EscrowPart, Receipt, RegistrationCertificate, SignedDeposit, WithdrawCommand};
use cardvault_proto::wallet::{ItemLoad, WalletListing, ITEM_ID_LEN, WALLET_CHALLENGE_LEN};

impl CardClient<'_> {
    /// GET WALLET CHALLENGE: the challenge the issuer's item load must name
    /// (the card keeps it until a LOAD ITEM uses it).
    pub fn wallet_challenge(&mut self) -> Result<Vec<u8>> {
        let ch = self.exec(&Command::get_wallet_challenge())?;
        if ch.len() != WALLET_CHALLENGE_LEN {
            return Err(Error::Malformed {
                command: "GET WALLET CHALLENGE",
                reason: format!("the challenge is {} bytes, not {WALLET_CHALLENGE_LEN}", ch.len()),
            });
        }
        Ok(ch)
    }

    /// READ WALLET: the wallet's capacity and items (the answer is bounded
    /// and checked item by item).
    pub fn read_wallet(&mut self) -> Result<WalletListing> {
        let raw = self.exec(&Command::read_wallet())?;
        WalletListing::parse(&raw).map_err(|reason| Error::Malformed {
            command: "READ WALLET",
            reason,
        })
    }

    /// LOAD ITEM with the issuer's signature. `capacity` names the wallet's
    /// size in the refusal when it is full.
    pub fn load_item(&mut self, load: &ItemLoad, capacity: u8) -> Result<()> {
        let r = self.transmit(&Command::load_item(load))?;
        match r.sw {
            StatusWord::Ok => Ok(()),
            StatusWord::SecurityStatusNotSatisfied => Err(Refusal::ItemLoadNotAuthorized.into()),
            StatusWord::WrongData => Err(Refusal::ItemRejected.into()),
            StatusWord::NotEnoughMemory => Err(Refusal::WalletFull(capacity).into()),
            sw => Err(Error::Card {
                command: "LOAD ITEM",
                sw,
            }),
        }
    }

    /// SPEND `amount` of item `id`; returns its remaining balance.
    pub fn spend(&mut self, id: &[u8; ITEM_ID_LEN], amount: u32, balance: u32) -> Result<u32> {
        let r = self.transmit(&Command::spend(id, amount))?;
        let name = || cardvault_proto::to_hex(id);
        match r.sw {
            StatusWord::Ok => {
                let b: [u8; 4] = r.data.try_into().map_err(|d: Vec<u8>| Error::Malformed {
                    command: "SPEND",
                    reason: format!("a balance is 4 bytes, the card sent {}", d.len()),
                })?;
                Ok(u32::from_be_bytes(b))
            }
            StatusWord::SecurityStatusNotSatisfied => Err(Refusal::PinRequired("SPEND").into()),
            StatusWord::ReferenceDataNotFound => Err(Refusal::NoSuchItem(name()).into()),
            StatusWord::ConditionsNotSatisfied => Err(Refusal::ItemPending(name()).into()),
            StatusWord::WrongData => Err(Refusal::SpendTooMuch(name(), balance).into()),
            sw => Err(Error::Card { command: "SPEND", sw }),
        }
    }

    /// DEPOSIT P1 = 00: the card seals and signs item `id` for safe
    /// `safe_id` (the item becomes pending; a pending item answers the same
    /// deposit again, for the same safe only).
    pub fn deposit_begin(&mut self, id: &[u8; ITEM_ID_LEN], mask: u8, safe_id: &[u8; 16]) -> Result<SignedDeposit> {
        let r = self.transmit(&Command::deposit_begin(id, mask, safe_id))?;
        match r.sw {
            StatusWord::Ok => SignedDeposit::parse(&r.data).ok_or_else(|| Error::Malformed {
                command: "DEPOSIT",
                reason: "the deposit does not parse".into(),
            }),
            StatusWord::SecurityStatusNotSatisfied => Err(Refusal::PinRequired("DEPOSIT").into()),
            StatusWord::ReferenceDataNotFound => Err(Refusal::NoSuchItem(cardvault_proto::to_hex(id)).into()),
            StatusWord::ConditionsNotSatisfied => Err(Refusal::DepositNotStarted(cardvault_proto::to_hex(id)).into()),
            sw => Err(Error::Card { command: "DEPOSIT", sw }),
        }
    }

    /// DEPOSIT P1 = 01: the card checks the safe's registration certificate,
    /// keeps it and deletes the item.
    pub fn deposit_complete(&mut self, cert: &RegistrationCertificate, safe_certificate: &[u8]) -> Result<()> {
        let data = cardvault_proto::safe::completion_data(cert, safe_certificate);
        let r = self.transmit(&Command::deposit_complete(&data))?;
        match r.sw {
            StatusWord::Ok => Ok(()),
            StatusWord::SecurityStatusNotSatisfied => Err(Refusal::SafeCertificateRefused.into()),
            StatusWord::WrongData => Err(Refusal::SafeCertificateMismatch.into()),
            StatusWord::NotEnoughMemory => Err(Refusal::CertificateStoreFull.into()),
            StatusWord::ReferenceDataNotFound => {
                Err(Refusal::NoSuchItem(cardvault_proto::to_hex(&cert.item_id)).into())
            }
            sw => Err(Error::Card { command: "DEPOSIT", sw }),
        }
    }

    /// GET WITHDRAW CHALLENGE: the challenge a safe's delivery must name.
    pub fn withdraw_challenge(&mut self) -> Result<[u8; 16]> {
        let ch = self.exec(&Command::get_withdraw_challenge())?;
        ch.try_into().map_err(|c: Vec<u8>| Error::Malformed {
            command: "GET WITHDRAW CHALLENGE",
            reason: format!("the challenge is {} bytes, not 16", c.len()),
        })
    }

    /// WITHDRAW: the card takes a safe's delivery and answers its receipt.
    pub fn withdraw(&mut self, cmd: &WithdrawCommand) -> Result<Receipt> {
        let r = self.transmit(&Command::withdraw(&cmd.encode()))?;
        match r.sw {
            StatusWord::Ok => Receipt::parse(&r.data).ok_or_else(|| Error::Malformed {
                command: "WITHDRAW",
                reason: "the receipt does not parse".into(),
            }),
            StatusWord::SecurityStatusNotSatisfied => Err(Refusal::DeliveryNotAuthorized.into()),
            StatusWord::WrongData => Err(Refusal::DeliveryRejected.into()),
            StatusWord::ConditionsNotSatisfied => Err(Refusal::DeliveryReplayed.into()),
            StatusWord::NotEnoughMemory => {
                let capacity = self.read_wallet()?.capacity;
                Err(Refusal::WalletFull(capacity).into())
            }
            sw => Err(Error::Card {
                command: "WITHDRAW",
                sw,
            }),
        }
    }

    /// READ SAFE RECORDS P1 = 00: the registration certificates on the card.
    pub fn safe_certificates(&mut self) -> Result<Vec<RegistrationCertificate>> {
        self.safe_records(0)?
            .iter()
            .map(|c| {
                RegistrationCertificate::parse(c).ok_or_else(|| Error::Malformed {
                    command: "READ SAFE RECORDS",
                    reason: "a certificate does not parse".into(),
                })
            })
            .collect()
    }

    /// READ SAFE RECORDS P1 = 01: the receipts of deliveries the card took.
    pub fn safe_receipts(&mut self) -> Result<Vec<Receipt>> {
        self.safe_records(1)?
            .iter()
            .map(|c| {
                Receipt::parse(c).ok_or_else(|| Error::Malformed {
                    command: "READ SAFE RECORDS",
                    reason: "a receipt does not parse".into(),
                })
            })
            .collect()
    }

    fn safe_records(&mut self, p1: u8) -> Result<Vec<Vec<u8>>> {
        let raw = self.exec(&Command::read_safe_records(p1))?;
        cardvault_proto::safe::parse_list(&raw, 64).ok_or_else(|| Error::Malformed {
            command: "READ SAFE RECORDS",
            reason: "the list does not parse".into(),
        })
    }

    /// ESCROW P1 = 00: the wallet key in `count` parts sealed under `escrow_key`.
    pub fn escrow_export(&mut self, escrow_key: &[u8; 32], count: u8) -> Result<Vec<EscrowPart>> {
        let mut data = zeroize::Zeroizing::new(escrow_key.to_vec());
        data.push(count);
        let raw = self.exec(&Command::escrow(0, &data))?;
        let bad = || Error::Malformed {
            command: "ESCROW",
            reason: "the parts do not parse".into(),
        };
        let (&n, mut rest) = raw.split_first().ok_or_else(bad)?;
        let mut parts = Vec::new();
        for _ in 0..n.min(cardvault_proto::safe::MAX_ESCROW_PARTS) {
            let (len, r) = rest.split_first_chunk::<2>().ok_or_else(bad)?;
            let len = u16::from_be_bytes(*len) as usize;
            if r.len() < len {
                return Err(bad());
            }
            parts.push(EscrowPart::parse(&r[..len]).ok_or_else(bad)?);
            rest = &r[len..];
        }
        if parts.len() != count as usize || !rest.is_empty() {
            return Err(bad());
        }
        Ok(parts)
    }

    /// ESCROW P1 = 01: rebuild another card's wallet key from its parts.
    pub fn escrow_import(&mut self, escrow_key: &[u8; 32], parts: &[EscrowPart]) -> Result<()> {
        let data = zeroize::Zeroizing::new(cardvault_proto::safe::escrow_import_data(escrow_key, parts));
        let r = self.transmit(&Command::escrow(1, &data))?;
        match r.sw {
            StatusWord::Ok => Ok(()),
            StatusWord::SecurityStatusNotSatisfied => Err(Refusal::EscrowPasswordWrong.into()),
            StatusWord::WrongData => Err(Refusal::EscrowIncomplete.into()),
            sw => Err(Error::Card { command: "ESCROW", sw }),
        }
    }

    /// ESCROW P1 = 02: a new wallet key; answers its check value.
    pub fn rekey(&mut self) -> Result<[u8; 8]> {
        let raw = self.exec(&Command::escrow(2, &[]))?;
        raw.try_into().map_err(|_| Error::Malformed {
            command: "ESCROW",
            reason: "the key check value is not 8 bytes".into(),
        })
    }
}
