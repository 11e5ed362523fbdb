//! `cardvault registrar init | certify` and `cardvault provider init`: the
//! parties of the storing authorization (src/registrar.rs).

use super::{print_json, Ctx};
use crate::error::{Error, Result};
use crate::registrar::{self, RegistrarKind};
use cardvault_proto::storing::Party;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum RegistrarCommand {
    /// Make a registrar root: of issuers (--kind issuer, certifies IRCs) or of
    /// data providers and their data (--kind data, certifies DPRs and SDCIs).
    Init {
        /// Which registrar: of issuers or of data providers.
        #[arg(long, value_enum)]
        kind: RegistrarKind,
        /// Directory for registrar.json, root.pem, root-key.pem (0600).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// The registrar's name (its root's common name).
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing registrar in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Certify a party directory (`provider init`): writes its
    /// certificate.pem and the registrar's root beside it; or, with --data,
    /// certify a data item (SDCI) of a provider.
    Certify {
        /// The registrar's directory (`registrar init`).
        #[arg(long, value_name = "DIR")]
        registrar: PathBuf,
        /// The party's directory.
        #[arg(value_name = "PARTY_DIR", required_unless_present = "data")]
        party: Option<PathBuf>,
        /// Validity of a registration certificate, in days.
        #[arg(long, default_value_t = 730)]
        days: u32,
        /// Certify this data file instead (data registrar only).
        #[arg(long, value_name = "FILE", requires_all = ["id", "provider", "output"])]
        data: Option<PathBuf>,
        /// The data item's id (data certificate id).
        #[arg(long)]
        id: Option<String>,
        /// The provider the data item is certified for (its DPR's name).
        #[arg(long)]
        provider: Option<String>,
        /// Where to write the data certificate (JSON).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace an existing certificate.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ProviderCommand {
    /// Make a party's storing key (a data provider's, or with --as issuer the
    /// issuer's): party.json, key.pem (0600), public.hex for its registrar.
    Init {
        /// Directory for the party's key (0600) and public key.
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// The party's name, as its registration certificate will carry it
        /// (an issuer's: the common name of its issuer root).
        #[arg(long)]
        name: String,
        /// The party: a data provider, or an issuer.
        #[arg(long = "as", value_name = "PARTY", default_value = "provider")]
        party: Party,
        /// Replace an existing party in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Agree, as a data provider, that a restore writes your `authorized`
    /// applications: sign the restore request (`restore --request`) for the
    /// applications it lists as yours. Checks the target card's certificate
    /// under the issuer roots of --trust first.
    AuthorizeRestore {
        /// The restore request file.
        request: PathBuf,
        /// The provider's directory (`provider init`, certified by its data registrar).
        #[arg(long, value_name = "DIR")]
        key: PathBuf,
        /// Only this application (repeat for several); default: every one the request lists as yours.
        #[arg(long = "app", value_name = "ID")]
        apps: Vec<u8>,
        /// The agreement file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

fn exists(e: Error) -> Error {
    match e {
        Error::OutputExists(p) => Error::Usage(format!("{} already exists; use --force to replace it", p.display())),
        e => e,
    }
}

pub fn run_registrar(ctx: &Ctx, c: RegistrarCommand) -> Result<()> {
    match c {
        RegistrarCommand::Init {
            kind,
            output,
            name,
            force,
        } => {
            let name = name.unwrap_or_else(|| format!("cardvault {} registrar", format!("{kind:?}").to_lowercase()));
            let r = registrar::init_registrar(&output, kind, &name, force).map_err(exists)?;
            if ctx.json {
                print_json(&r);
            } else {
                println!("{} registrar '{}' in {}", r.kind, r.name, r.dir.display());
                println!("root-key.pem (mode 0600): keep it offline; install root.pem on cards at issuance");
            }
            Ok(())
        }
        RegistrarCommand::Certify {
            registrar: dir,
            party,
            days,
            data,
            id,
            provider,
            output,
            force,
        } => {
            let reg = registrar::Registrar::load(&dir)?;
            if let Some(data) = data {
                let bytes = std::fs::read(&data).map_err(|e| Error::io(format!("reading {}", data.display()), e))?;
                let (id, provider, output) = (id.unwrap_or_default(), provider.unwrap_or_default(), output.unwrap());
                let f = registrar::certify_data(&reg, &id, &provider, &bytes)?;
                if output.exists() && !force {
                    return Err(exists(Error::OutputExists(output)));
                }
                let text = serde_json::to_string_pretty(&f).expect("json");
                std::fs::write(&output, text).map_err(|e| Error::io(format!("writing {}", output.display()), e))?;
                if ctx.json {
                    print_json(&f);
                } else {
                    println!(
                        "data certificate '{}' ({} bytes) for {} -> {}",
                        f.id,
                        f.size,
                        f.provider,
                        output.display()
                    );
                }
                return Ok(());
            }
            let party = party.expect("clap: required unless --data");
            let r = registrar::certify_party(&reg, &party, days, force).map_err(exists)?;
            if ctx.json {
                print_json(&r);
            } else {
                println!(
                    "certified '{}' until {} -> {}",
                    r.subject,
                    r.not_after,
                    r.certificate.display()
                );
            }
            Ok(())
        }
    }
}

pub fn run_provider(ctx: &Ctx, c: ProviderCommand) -> Result<()> {
    match c {
        ProviderCommand::Init {
            output,
            name,
            party,
            force,
        } => {
            let r = registrar::init_party(&output, party, &name, force).map_err(exists)?;
            if ctx.json {
                print_json(&r);
            } else {
                println!("{} '{}' in {}", r.kind, r.name, r.dir.display());
                println!(
                    "key.pem (mode 0600); next: its registrar runs `cardvault registrar certify {}`",
                    r.dir.display()
                );
            }
            Ok(())
        }
        ProviderCommand::AuthorizeRestore {
            request,
            key,
            apps,
            output,
        } => {
            let text = std::fs::read_to_string(&request)
                .map_err(|e| Error::input(format!("reading {}", request.display()), e))?;
            let req: crate::workflow::backup::RestoreRequest =
                serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", request.display())))?;
            if output.exists() {
                return Err(Error::Usage(format!("{} already exists", output.display())));
            }
            if ctx.trust.is_empty() {
                return Err(Error::Usage(
                    "no trusted issuer root to check the target card's certificate: give --trust ROOT.pem".into(),
                ));
            }
            crate::workflow::authorize::check_target_certificate(&req, ctx.trust.roots())?;
            let me = registrar::load_party(&key)?;
            let agreement = crate::workflow::backup::sign_agreement(&req, &me, &apps)?;
            std::fs::write(&output, serde_json::to_string_pretty(&agreement).expect("json"))
                .map_err(|e| Error::io(format!("writing {}", output.display()), e))?;
            if ctx.json {
                print_json(&agreement);
            } else {
                for a in &agreement.agreements {
                    println!(
                        "{} agrees: application {} on card {} from card {} backup #{} -> {}",
                        agreement.provider,
                        a.application,
                        req.target_card,
                        req.source_card,
                        req.counter,
                        output.display()
                    );
                }
            }
            Ok(())
        }
    }
}
