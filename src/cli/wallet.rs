//! `cardvault wallet list | challenge | authorize | load | spend`

use super::{print_json, Ctx};
use crate::error::{Error, Result};
use crate::safe::{SafeAddress, SafeClient};
use crate::secret::SecretSource;
use crate::signer::IssuerKeySource;
use crate::workflow::deposit::{self, CertificateSource, IssuerWithdrawal};
use crate::workflow::escrow;
use crate::workflow::wallet::{self, ItemLoadAuthorization, ItemLoadRequest, ItemSpec, ItemView};
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// An item's terms on the command line (or `--item FILE`, TOML).
#[derive(clap::Args, Debug)]
pub struct ItemArgs {
    /// The item's terms as a TOML file (kind, name, unit_price, quantity,
    /// place, valid_from, valid_until, remarks) instead of the flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kind", "name", "unit_price"])]
    item: Option<PathBuf>,
    /// Kind of value: cash, ticket, coupon or other.
    #[arg(long)]
    kind: Option<String>,
    /// The item's name (at most 64 bytes).
    #[arg(long)]
    name: Option<String>,
    /// Unit price, in the issuer's units.
    #[arg(long)]
    unit_price: Option<u32>,
    /// Quantity (total = unit price x quantity).
    #[arg(long, default_value_t = 1)]
    quantity: u32,
    /// Place of use.
    #[arg(long, default_value = "")]
    place: String,
    /// First day of validity (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    valid_from: Option<String>,
    /// Last day of validity (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    valid_until: Option<String>,
    /// Remarks.
    #[arg(long, default_value = "")]
    remarks: String,
}

impl ItemArgs {
    fn spec(self) -> Result<ItemSpec> {
        if let Some(path) = self.item {
            let text =
                std::fs::read_to_string(&path).map_err(|e| Error::input(format!("reading {}", path.display()), e))?;
            return toml::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())));
        }
        let (Some(kind), Some(name), Some(unit_price)) = (self.kind, self.name, self.unit_price) else {
            return Err(Error::Usage(
                "an item needs --kind, --name and --unit-price (or --item FILE)".into(),
            ));
        };
        Ok(ItemSpec {
            kind,
            name,
            unit_price,
            quantity: self.quantity,
            place: self.place,
            valid_from: self.valid_from,
            valid_until: self.valid_until,
            remarks: self.remarks,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum WalletCommand {
    /// List the items of electronic value on the card (no PIN needed).
    List,
    /// Ask the card for a wallet challenge and write the item load request
    /// the value issuer signs with `cardvault wallet authorize`.
    Challenge {
        #[command(flatten)]
        item: Box<ItemArgs>,
        /// Where to write the load request (JSON).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Value issuer: sign an item load request (no card needed).
    Authorize {
        /// The request file written by `wallet challenge`.
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// Issuer signing key: hex P-256 private scalar from prompt, env:VAR or
        /// file:PATH, or pkcs11:token=LABEL;object=LABEL (a PKCS#11 token key).
        #[arg(long, value_name = "SOURCE|URI")]
        issuer_key: IssuerKeySource,
        /// The signer certificate (PEM) of --issuer-key, under the issuer root
        /// installed on the cards (`signer.pem` of `cardvault issuer init`).
        #[arg(long, value_name = "FILE")]
        signer_cert: PathBuf,
        /// File to write the signed item load authorization to.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Load an item: with the issuer's authorization (`--authorization`), or
    /// in one step when the issuer key is at hand (`--issuer-key` and the
    /// item's terms).
    Load {
        /// The item load authorization written by `wallet authorize`.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["issuer_key", "item", "kind", "name"])]
        authorization: Option<PathBuf>,
        #[command(flatten)]
        item: Box<ItemArgs>,
        /// Issuer signing key: hex P-256 private scalar from prompt, env:VAR or
        /// file:PATH, or pkcs11:token=LABEL;object=LABEL (a PKCS#11 token key).
        #[arg(
            long,
            value_name = "SOURCE|URI",
            required_unless_present = "authorization",
            requires = "signer_cert"
        )]
        issuer_key: Option<IssuerKeySource>,
        /// The signer certificate (PEM) of --issuer-key, under the issuer root
        /// installed on the card.
        #[arg(long, value_name = "FILE", requires = "issuer_key")]
        signer_cert: Option<PathBuf>,
        /// When the wallet is full, first deposit into this safe an item the
        /// backup conditions select (default: the conditions' `safe`).
        #[arg(long, value_name = "DIR|URL")]
        safe: Option<SafeAddress>,
        /// The backup conditions (TOML); default: `[wallet.backup]` of config.toml.
        #[arg(long, value_name = "FILE")]
        conditions: Option<PathBuf>,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Spend an amount of an item's remaining balance (under the PIN).
    Spend {
        /// The item's id (hex, or a unique prefix of it, as `wallet list` shows).
        item: String,
        /// Amount, in the item's units.
        amount: u32,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Deposit an item into a safe: the card seals and signs it, the safe
    /// answers a registration certificate, the card keeps it and deletes
    /// the item; the vault keeps a copy.
    Deposit {
        /// The item's id (hex, or a unique prefix).
        item: String,
        /// A safe directory (embedded) or an http:// address.
        #[arg(long, value_name = "DIR|URL")]
        safe: SafeAddress,
        /// Summary fields the certificate's digest covers (kind, name,
        /// validity, amount, place, issuer).
        #[arg(long, value_name = "FIELDS", default_value = "kind,name,validity,amount")]
        summary: String,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Withdraw a deposited item onto the card in the reader, by its
    /// registration certificate (from the card, or the vault's copy with
    /// --from-vault when the depositing card is lost).
    Withdraw {
        /// The item's id (hex, or a unique prefix).
        item: String,
        /// The safe that holds it: a directory or an http:// address.
        #[arg(long, value_name = "DIR|URL")]
        safe: SafeAddress,
        /// Take the certificate from the vault instead of the card.
        #[arg(long)]
        from_vault: bool,
        /// Onto another card than the depositor: the issuer's signing key
        /// authorizes this card (prompt, env:VAR, file:PATH or pkcs11: URI).
        #[arg(long, value_name = "SOURCE|URI", requires = "signer_cert")]
        issuer_key: Option<IssuerKeySource>,
        /// The signer certificate (PEM) of --issuer-key.
        #[arg(long, value_name = "FILE", requires = "issuer_key")]
        signer_cert: Option<PathBuf>,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Settle what is pending with a safe: complete pending deposits, send
    /// the card's receipts of withdrawals.
    Resolve {
        /// The safe: a directory or an http:// address.
        #[arg(long, value_name = "DIR|URL")]
        safe: SafeAddress,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Backup by conditions: list the held items that match the conditions
    /// (TOML: kinds, min_size, free_slots_below, valid_until_before,
    /// held_longest, safe; default `[wallet.backup]` in config.toml) and
    /// deposit each.
    Backup {
        /// The conditions file (TOML); default: `[wallet.backup]` of config.toml.
        #[arg(long, value_name = "FILE")]
        conditions: Option<PathBuf>,
        /// The safe (default: the conditions' `safe`).
        #[arg(long, value_name = "DIR|URL")]
        safe: Option<SafeAddress>,
        /// Only list the matching items.
        #[arg(long)]
        dry_run: bool,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// The registration certificates on the card (no PIN needed).
    Certificates,
    /// Escrow the wallet key under the owner's password: whole into one
    /// safe, or split across two (--safe twice) so that neither alone can
    /// recover it.
    Escrow {
        /// A safe (a directory or an http:// address); twice to split the key.
        #[arg(long, value_name = "DIR|URL", required = true)]
        safe: Vec<SafeAddress>,
        /// The owner's password: prompt, env:VAR or file:PATH (never argv).
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        password: SecretSource,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Rebuild a lost card's wallet key on the replacement card in the
    /// reader from its escrow (the owner's password), and withdraw the lost
    /// card's items the vault holds certificates for in these safes.
    Recover {
        /// Every safe that holds a part of the key (the items' safes too).
        #[arg(long, value_name = "DIR|URL", required = true)]
        safe: Vec<SafeAddress>,
        /// The lost card's number.
        #[arg(
            long,
            value_name = "CARD",
            required_unless_present = "holder",
            conflicts_with = "holder"
        )]
        from_card: Option<String>,
        /// As --from-card, for the holder's lost main card (member number,
        /// name or card number; `cardvault holder lost` marks it).
        #[arg(long, value_name = "HOLDER")]
        holder: Option<String>,
        /// The replacement card's reader (default: -r).
        #[arg(long, value_name = "READER")]
        new: Option<String>,
        /// The owner's password: prompt, env:VAR or file:PATH (never argv).
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        password: SecretSource,
        /// The replacement card's PIN: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Move to a new wallet key and deposit again under it what the card
    /// has in the safe, so that an escrowed old key opens nothing new.
    Rekey {
        /// The safe whose items are deposited again.
        #[arg(long, value_name = "DIR|URL")]
        safe: SafeAddress,
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
}

/// The backup conditions: the file given, else `[wallet.backup]` of config.toml.
fn read_conditions(ctx: &Ctx, path: Option<&Path>) -> Result<wallet::BackupConditions> {
    let Some(path) = path else {
        return Ok(ctx.opts.config.wallet.backup.clone());
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::input(format!("reading {}", path.display()), e))?;
    let c: wallet::BackupConditions =
        toml::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    // Check the conditions before any card is touched.
    c.select(
        &cardvault_proto::wallet::WalletListing {
            capacity: 1,
            items: Vec::new(),
        },
        true,
    )
    .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    Ok(c)
}

fn conds_safe(c: &wallet::BackupConditions) -> Result<Option<SafeAddress>> {
    c.safe.as_deref().map(|s| s.parse().map_err(Error::Usage)).transpose()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::input(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    if path.exists() {
        return Err(Error::OutputExists(path.to_path_buf()));
    }
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// One line per item: id, kind, name, balance of total, validity, state.
pub(crate) fn item_line(v: &ItemView) -> String {
    let validity = match (&v.valid_from, &v.valid_until) {
        (None, None) => String::new(),
        (f, u) => format!(
            ", valid {} to {}",
            f.as_deref().unwrap_or("-"),
            u.as_deref().unwrap_or("-")
        ),
    };
    let place = if v.place.is_empty() {
        String::new()
    } else {
        format!(" at {}", v.place)
    };
    let state = match v.state.as_deref() {
        Some("held") | None => String::new(),
        Some(s) => format!(" [{s}]"),
    };
    format!(
        "{}  {:<6} {}{place}: {} of {} left ({} x {}){validity}, issuer {}{state}",
        &v.id, v.kind, v.name, v.balance, v.total, v.quantity, v.unit_price, v.issuer
    )
}

pub fn run(ctx: &Ctx, c: WalletCommand) -> Result<()> {
    match c {
        WalletCommand::List => {
            let listing = ctx.with_card(wallet::list)?;
            let items: Vec<ItemView> = listing.items.iter().map(|(s, i)| ItemView::of(i, Some(*s))).collect();
            if ctx.json {
                print_json(&serde_json::json!({
                    "capacity": listing.capacity,
                    "items": items,
                }));
            } else {
                println!("wallet: {} of {} item slots used", items.len(), listing.capacity);
                for v in &items {
                    println!("{}", item_line(v));
                }
            }
        }
        WalletCommand::Challenge { item, output, pin } => {
            let spec = item.spec()?;
            if output.exists() {
                return Err(Error::OutputExists(output));
            }
            let pin = pin.read("PIN")?;
            let req = ctx.with_card(|card| wallet::request_load(card, &pin, &spec))?;
            write_new(&output, &serde_json::to_string_pretty(&req).expect("json"))?;
            if ctx.json {
                print_json(&req);
            } else {
                println!(
                    "item load request written to {} (card {}, item {} {}); \
                     the value issuer signs it with `cardvault wallet authorize`",
                    output.display(),
                    req.card_number,
                    req.item.id,
                    req.item.name
                );
            }
        }
        WalletCommand::Authorize {
            request,
            issuer_key,
            signer_cert,
            output,
        } => {
            let req: ItemLoadRequest = read_json(&request)?;
            if output.exists() {
                return Err(Error::OutputExists(output));
            }
            let signer = super::backup::read_issuer_signer(ctx, &issuer_key, &signer_cert)?;
            let auth = wallet::sign_load(&req, &signer)?;
            write_new(&output, &serde_json::to_string_pretty(&auth).expect("json"))?;
            if ctx.json {
                print_json(&auth);
            } else {
                println!(
                    "authorized: item {} ({}) onto card {} -> {}",
                    auth.request.item.id,
                    auth.request.item.name,
                    req.card_number,
                    output.display()
                );
            }
        }
        WalletCommand::Load {
            authorization,
            item,
            issuer_key,
            signer_cert,
            safe,
            conditions,
            pin,
        } => {
            let conds = read_conditions(ctx, conditions.as_deref())?;
            let room = match safe.or(conds_safe(&conds)?) {
                Some(a) => Some((SafeClient::connect(&a)?, a, ctx.vault_or_create()?)),
                None => None,
            };
            let mut room = room;
            let mut make_room = |card: &mut crate::card::CardClient<'_>, pin: &[u8]| -> Result<()> {
                if let Some((client, addr, vault)) = room.as_mut() {
                    deposit::make_room(card, pin, &conds, addr, client, vault)?;
                }
                Ok(())
            };
            let report = match (authorization, issuer_key.zip(signer_cert)) {
                (Some(path), _) => {
                    let auth: ItemLoadAuthorization = read_json(&path)?;
                    let pin = pin.read("PIN")?;
                    ctx.with_card(|card| {
                        make_room(card, &pin)?;
                        wallet::load(card, &pin, &auth)
                    })?
                }
                (None, Some((key, cert))) => {
                    let spec = item.spec()?;
                    let signer = super::backup::read_issuer_signer(ctx, &key, &cert)?;
                    let pin = pin.read("PIN")?;
                    ctx.with_card(|card| {
                        make_room(card, &pin)?;
                        wallet::load_with_signer(card, &pin, &spec, &signer)
                    })?
                }
                _ => {
                    return Err(Error::Usage(
                        "wallet load needs --authorization FILE, or the item's terms with --issuer-key".into(),
                    ))
                }
            };
            if ctx.json {
                print_json(&report);
            } else {
                let what = if report.already_loaded {
                    "already on the card"
                } else {
                    "loaded"
                };
                println!("{what}: {}", item_line(&report.item));
                println!("wallet: {} of {} item slots used", report.items, report.capacity);
            }
        }
        WalletCommand::Spend { item, amount, pin } => {
            let pin = pin.read("PIN")?;
            let report = ctx.with_card(|card| wallet::spend(card, &pin, &item, amount))?;
            if ctx.json {
                print_json(&report);
            } else if report.removed {
                println!(
                    "spent {} of item {}; nothing is left, the item left the wallet",
                    report.spent, report.item
                );
            } else {
                println!(
                    "spent {} of item {}; {} left",
                    report.spent, report.item, report.balance
                );
            }
        }
        WalletCommand::Deposit {
            item,
            safe,
            summary,
            pin,
        } => {
            let mask = deposit::summary_mask(&summary)?;
            let mut client = SafeClient::connect(&safe)?;
            let mut vault = ctx.vault_or_create()?;
            let pin = pin.read("PIN")?;
            let r = ctx.with_card(|card| deposit::deposit(card, &pin, &item, &safe, &mut client, &mut vault, mask))?;
            if ctx.json {
                print_json(&r);
            } else {
                println!(
                    "deposited item {} into safe {} (counter {}); the card keeps the registration certificate, \
                     the vault a copy",
                    r.item, r.safe, r.counter
                );
            }
        }
        WalletCommand::Withdraw {
            item,
            safe,
            from_vault,
            issuer_key,
            signer_cert,
            pin,
        } => {
            let signer = match issuer_key.zip(signer_cert) {
                Some((k, c)) => Some(super::backup::read_issuer_signer(ctx, &k, &c)?),
                None => None,
            };
            let mut client = SafeClient::connect(&safe)?;
            let mut vault = ctx.vault_or_create()?;
            let pin = pin.read("PIN")?;
            let source = if from_vault {
                CertificateSource::Vault(item)
            } else {
                CertificateSource::Card(item)
            };
            let r = ctx.with_card(|card| {
                deposit::withdraw(
                    card,
                    &pin,
                    &source,
                    &mut client,
                    &mut vault,
                    signer.as_ref().map(|s| IssuerWithdrawal { signer: s }),
                )
            })?;
            if ctx.json {
                print_json(&r);
            } else if r.settled {
                println!(
                    "withdrew item {} onto card {} (safe counter {})",
                    r.item, r.card_number, r.counter
                );
            } else {
                println!(
                    "withdrew item {} onto card {}; the safe did not take the receipt yet: run `wallet resolve`",
                    r.item, r.card_number
                );
            }
        }
        WalletCommand::Resolve { safe, pin } => {
            let mut client = SafeClient::connect(&safe)?;
            let mut vault = ctx.vault_or_create()?;
            let pin = pin.read("PIN")?;
            let r = ctx.with_card(|card| deposit::resolve(card, &pin, &safe, &mut client, &mut vault))?;
            if ctx.json {
                print_json(&r);
            } else {
                println!(
                    "settled: {} pending deposits completed, {} receipts accepted by the safe",
                    r.deposits.len(),
                    r.receipts.len()
                );
            }
        }
        WalletCommand::Escrow { safe, password, pin } => {
            let mut clients = safe.iter().map(SafeClient::connect).collect::<Result<Vec<_>>>()?;
            let password = password.read("owner password")?;
            let pin = pin.read("PIN")?;
            let r = ctx.with_card(|card| escrow::escrow(card, &pin, &password, &mut clients))?;
            if ctx.json {
                print_json(&r);
            } else {
                for (id, index) in &r.parts {
                    println!("wallet key part {index} of {} escrowed in safe {id}", r.parts.len());
                }
            }
        }
        WalletCommand::Recover {
            safe,
            from_card,
            holder,
            new,
            password,
            pin,
        } => {
            let mut clients = safe
                .iter()
                .map(|a| SafeClient::connect(a).map(|c| (a.clone(), c)))
                .collect::<Result<Vec<_>>>()?;
            let mut vault = ctx.vault()?;
            let from_card = match (from_card, holder) {
                (Some(c), _) => c,
                (None, Some(h)) => crate::workflow::holders::lost_main_card(&vault, &h)?,
                (None, None) => unreachable!("clap requires one"),
            };
            let password = password.read("owner password")?;
            let pin = pin.read("PIN")?;
            let mut reader = match &new {
                Some(r) => ctx.open_named(r)?,
                None => ctx.open_reader()?,
            };
            let mut card = crate::card::CardClient::open(reader.as_mut(), ctx.session())?;
            let r = escrow::recover(&mut card, &pin, &password, &from_card, &mut clients, &mut vault)?;
            if ctx.json {
                print_json(&r);
            } else {
                println!(
                    "card {}'s wallet key rebuilt on card {}; {} items withdrawn",
                    r.lost_card,
                    r.new_card,
                    r.withdrawn.len()
                );
                for w in &r.withdrawn {
                    println!("  item {} (safe counter {})", w.item, w.counter);
                }
            }
        }
        WalletCommand::Rekey { safe, pin } => {
            let mut client = SafeClient::connect(&safe)?;
            let mut vault = ctx.vault_or_create()?;
            let pin = pin.read("PIN")?;
            let r = ctx.with_card(|card| escrow::rekey(card, &pin, &safe, &mut client, &mut vault))?;
            if ctx.json {
                print_json(&r);
            } else {
                println!(
                    "new wallet key (check {}); {} items deposited again under it; escrow the new key with `wallet escrow`",
                    r.key_check,
                    r.redeposited.len()
                );
            }
        }
        WalletCommand::Backup {
            conditions,
            safe,
            dry_run,
            pin,
        } => {
            let conds = read_conditions(ctx, conditions.as_deref())?;
            let addr = safe
                .or(conds_safe(&conds)?)
                .ok_or_else(|| Error::Usage("wallet backup needs --safe, or `safe` in the conditions".into()))?;
            let mut client = SafeClient::connect(&addr)?;
            let mut vault = ctx.vault_or_create()?;
            let pin = if dry_run { None } else { Some(pin.read("PIN")?) };
            let r = ctx.with_card(|card| {
                deposit::backup_by_conditions(
                    card,
                    pin.as_deref().map(|p| &p[..]).unwrap_or(b""),
                    &conds,
                    &addr,
                    &mut client,
                    &mut vault,
                    dry_run,
                )
            })?;
            if ctx.json {
                print_json(&r);
            } else {
                for id in &r.matched {
                    println!("matches  {id}");
                }
                if dry_run {
                    println!("{} items match (dry run: nothing deposited)", r.matched.len());
                } else {
                    println!("{} items deposited into {addr}", r.deposited.len());
                }
            }
        }
        WalletCommand::Certificates => {
            let certs = ctx.with_card(|card| card.safe_certificates())?;
            let rows: Vec<serde_json::Value> = certs
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "safe_id": cardvault_proto::to_hex(&c.safe_id),
                        "counter": c.counter,
                        "item": cardvault_proto::to_hex(&c.item_id),
                        "card_number": c.card_number,
                    })
                })
                .collect();
            if ctx.json {
                print_json(&rows);
            } else {
                for c in &certs {
                    println!(
                        "item {}  safe {}  counter {}",
                        cardvault_proto::to_hex(&c.item_id),
                        cardvault_proto::to_hex(&c.safe_id),
                        c.counter
                    );
                }
            }
        }
    }
    Ok(())
}
