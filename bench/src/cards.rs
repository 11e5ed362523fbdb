//! Embedded cards for the benchmarks: issued pairs, duplicated pairs, memory
//! filled with random data, and a 1 MiB card profile.

use applet_sim::Profile;
use cardvault::card::{CardClient, SessionOptions};
use cardvault::error::{Error, Result};
use cardvault::secret::Secret;
use cardvault::transport::sim::SimReader;
use cardvault::vault::Vault;
use cardvault::workflow::issue::Role;
use cardvault::workflow::{duplicate, issue};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// PIN of the built-in test profiles (main, backup, replacement).
pub const PROFILE_PIN: &[u8] = b"123456";
/// PIN that issuance gives the benchmark holders.
pub const HOLDER_PIN: &str = "2468";

/// Open (creating from `profile`) the embedded card `name` under `dir`.
pub fn open(dir: &Path, name: &str, profile: &str) -> Result<SimReader> {
    SimReader::open(dir, name, profile, None)
}

/// A holder record as the holder file would give it.
pub fn holder(id: &str) -> issue::Holder {
    issue::Holder {
        id: id.to_string(),
        pin: Zeroizing::new(HOLDER_PIN.as_bytes().to_vec()),
        member_number: Some(format!("M-{id}")),
        expiry: Some("2030-12".into()),
        key1: None,
    }
}

/// `n` random key group elements.
pub fn elements(n: usize) -> Vec<Secret> {
    (0..n)
        .map(|_| Zeroizing::new(cardvault_proto::crypto::random::<32>().to_vec()))
        .collect()
}

pub fn issue_options() -> Result<issue::IssueOptions> {
    // The embedded cards' built-in test issuer opens the SCP11a sessions and
    // signs the registration certificates.
    Ok(issue::IssueOptions {
        issuer: None,
        factory_issuer: None,
        key_group_size: 3,
        no_export_after_backup: false,
        domain: None,
        registrars: None,
    })
}

/// Personalize the blank embedded card `name` as `role` for `h`.
pub fn issue_card(dir: &Path, name: &str, h: &issue::Holder, role: issue::Role, key1: &[u8]) -> Result<SimReader> {
    let mut r = open(dir, name, "blank")?;
    issue::personalize(
        &mut CardClient::open(&mut r, SessionOptions::default())?,
        h,
        role,
        key1,
        &issue_options()?,
    )?;
    Ok(r)
}

/// A main and a backup card issued to holder `id` with a shared key 1, then
/// duplicated. Returns the readers, the main card's public key and key 1.
pub struct DuplicatedPair {
    pub main: SimReader,
    pub backup: SimReader,
    pub public: Vec<u8>,
    pub key1: Secret,
    pub holder: issue::Holder,
}

pub fn duplicated_pair(dir: &Path, id: &str, vault: &mut Vault) -> Result<DuplicatedPair> {
    let h = holder(id);
    let key1: Secret = Zeroizing::new(cardvault_proto::crypto::random::<32>().to_vec());
    let mut main = issue_card(dir, &format!("{id}-main"), &h, Role::Main, &key1)?;
    let mut backup = issue_card(dir, &format!("{id}-backup"), &h, Role::Backup, &key1)?;
    let report = {
        let mut m = CardClient::open(&mut main, SessionOptions::default())?;
        let mut b = CardClient::open(&mut backup, SessionOptions::default())?;
        let opts = duplicate::DuplicateOptions {
            main_pin: h.pin.clone(),
            backup_pin: h.pin.clone(),
            elements: elements(2),
            backup_gets_public_key: false,
        };
        duplicate::duplicate(&mut m, &mut b, &opts, vault)?
    };
    let public = cardvault_proto::from_hex(&report.public_key)
        .ok_or_else(|| Error::Data("duplicate reported a public key that is not hex".into()))?;
    Ok(DuplicatedPair {
        main,
        backup,
        public,
        key1,
        holder: h,
    })
}

/// Write `len` random bytes from page 0 on, in 32 KiB WRITE MEMORY commands.
/// The purse (pages 0..4 of the built-in profiles) takes no holder write:
/// filling starts after it.
pub fn fill(card: &mut CardClient<'_>, page_size: usize, len: usize) -> Result<()> {
    const FIRST: usize = 4;
    let mut data = vec![0u8; len.saturating_sub(FIRST * page_size)];
    openssl::rand::rand_bytes(&mut data).map_err(|e| Error::Data(e.to_string()))?;
    let per = (32768 / page_size).max(1) * page_size;
    for (i, chunk) in data.chunks(per).enumerate() {
        card.write_memory((FIRST + i * per / page_size) as u16, chunk)?;
    }
    Ok(())
}

/// Fill the whole application area (`len` bytes, 256-byte pages) of a
/// built-in-profile card with random data.
pub fn fill_reader(r: &mut SimReader, len: usize) -> Result<()> {
    let mut c = CardClient::open(r, SessionOptions::default())?;
    c.verify_pin(PROFILE_PIN)?;
    fill(&mut c, 256, len)
}

/// Write a card profile like the built-in main card but with `page_count`
/// pages of 256 bytes (4096 pages = a 1 MiB application area).
pub fn large_profile(dir: &Path, page_count: u16) -> Result<PathBuf> {
    let p = Profile::load("main").map_err(Error::Usage)?;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let text = format!(
        "role = \"main\"\npin = \"{}\"\npage_size = 256\npage_count = {page_count}\n\
         issued = true\nkey_group_size = 3\nkey1 = \"{}\"\nmember_number = \"M-BENCH\"\nexpiry = \"2031-12\"\n",
        p.pin,
        opt(&p.key1),
    );
    let path = dir.join(format!("main-{page_count}-pages.toml"));
    super::write_file(&path, text.as_bytes())?;
    Ok(path)
}

/// Generate the main key on a pre-issued `main` profile card (elements 2 and 3
/// first). Returns the public key.
pub fn give_key(card: &mut CardClient<'_>) -> Result<Vec<u8>> {
    card.verify_pin(PROFILE_PIN)?;
    for (i, e) in elements(2).iter().enumerate() {
        card.write_key_element(i as u8 + 2, e)?;
    }
    card.generate_key_pair()
}
