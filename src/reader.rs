//! Reader selection: `-r` takes an index, a name substring or `sim:NAME`
//! (also from `CARDVAULT_READER` or the configuration). With no choice, the
//! one reader holding a card is used; several give a clear list.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::transport::pcsc::{self as pcsc_t, PcscReader, PcscReaderInfo};
use crate::transport::sim::SimReader;
use crate::transport::Reader;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How the user named a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderSpec {
    Sim(String),
    Index(usize),
    Name(String),
}

impl ReaderSpec {
    pub fn parse(s: &str) -> ReaderSpec {
        if let Some(name) = s.strip_prefix("sim:") {
            ReaderSpec::Sim(name.to_string())
        } else if let Ok(i) = s.parse::<usize>() {
            ReaderSpec::Index(i)
        } else {
            ReaderSpec::Name(s.to_string())
        }
    }
}

/// Everything needed to open readers.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    pub data_dir: PathBuf,
    pub config: Config,
    /// `--extended-length` given on the command line.
    pub extended_flag: Option<crate::config::ExtendedMode>,
    /// `--wait`: how long to wait for a card.
    pub wait: Option<Duration>,
    /// Whether a `sim:NAME` that does not exist is made (`issue`, `--create`);
    /// otherwise it is refused with the closest existing names.
    pub create_cards: bool,
}

impl ReaderOptions {
    fn extended_for(&self, name: &str) -> Option<bool> {
        self.extended_flag
            .unwrap_or_else(|| self.config.extended_for(name))
            .forced()
    }
}

/// One line of `cardvault readers`.
#[derive(Debug, Clone, Serialize)]
pub struct ReaderEntry {
    /// Index for `-r N` (PC/SC readers only).
    pub index: Option<usize>,
    /// What to pass to `-r`.
    pub name: String,
    pub kind: &'static str,
    pub card_present: bool,
    pub atr: Option<String>,
}

/// All readers: PC/SC readers (if the service runs) and embedded cards.
/// Returns the entries and, when PC/SC is unavailable, why.
pub fn list_all(opts: &ReaderOptions) -> (Vec<ReaderEntry>, Option<String>) {
    let mut out = Vec::new();
    let mut pcsc_note = None;
    match pcsc_t::context().and_then(|ctx| pcsc_t::list(&ctx)) {
        Ok(list) => out.extend(list.into_iter().enumerate().map(|(i, r)| ReaderEntry {
            index: Some(i),
            name: r.name,
            kind: "pcsc",
            card_present: r.card_present,
            atr: r.atr.map(|a| cardvault_proto::to_hex(&a).to_uppercase()),
        })),
        Err(e) => pcsc_note = Some(e.to_string()),
    }
    for name in crate::transport::sim::list(&opts.data_dir) {
        let atr =
            crate::transport::sim::peek_atr(&opts.data_dir, &name).map(|a| cardvault_proto::to_hex(&a).to_uppercase());
        out.push(ReaderEntry {
            index: None,
            name: format!("sim:{name}"),
            kind: "embedded",
            card_present: atr.is_some(),
            atr,
        });
    }
    (out, pcsc_note)
}

/// Why no single reader can be chosen. The words leave out how to choose
/// one (the command line's reader option, waiting): the CLI adds that.
/// `readers` is the numbered list, one reader per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoReaderChosen {
    #[error("no PC/SC readers, so there is no reader {0}")]
    NoReaders(usize),
    #[error("'{name}' matches {count} readers:{readers}")]
    Ambiguous {
        name: String,
        count: usize,
        readers: String,
    },
    #[error("no reader has a card; readers:{0}")]
    NoCardAnywhere(String),
    #[error("{count} readers have a card:{readers}")]
    ManyCards { count: usize, readers: String },
    /// `sim:NAME` names no embedded card; `closest` are existing names that
    /// look like it (a typo, most likely).
    #[error("no embedded card 'sim:{name}'{}", did_you_mean(closest))]
    NoSuchSimCard { name: String, closest: Vec<String> },
}

fn did_you_mean(closest: &[String]) -> String {
    if closest.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = closest.iter().map(|n| format!("sim:{n}")).collect();
        format!("; did you mean {}?", names.join(" or "))
    }
}

/// Levenshtein distance between two names (byte-wise; names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Existing embedded card names close to `name`: at most three, nearest first,
/// within a third of the name's length (at least two edits).
pub fn closest_sim_names(data_dir: &std::path::Path, name: &str) -> Vec<String> {
    let limit = (name.len() / 3).max(2);
    let mut near: Vec<(usize, String)> = crate::transport::sim::list(data_dir)
        .into_iter()
        .map(|n| (edit_distance(name, &n), n))
        .filter(|(d, _)| *d <= limit)
        .collect();
    near.sort();
    near.into_iter().take(3).map(|(_, n)| n).collect()
}

/// Refuse `sim:NAME` for a card that does not exist unless cards may be made.
pub fn check_sim_exists(opts: &ReaderOptions, name: &str) -> Result<()> {
    if opts.create_cards
        || !crate::transport::sim::valid_name(name)
        || crate::transport::sim::card_path(&opts.data_dir, name).exists()
    {
        return Ok(());
    }
    Err(NoReaderChosen::NoSuchSimCard {
        name: name.to_string(),
        closest: closest_sim_names(&opts.data_dir, name),
    }
    .into())
}

fn describe(list: &[PcscReaderInfo]) -> String {
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "\n  {i}: {} ({})",
                r.name,
                if r.card_present { "card present" } else { "no card" }
            )
        })
        .collect()
}

/// Open the reader the user asked for (or the only one with a card).
pub fn open(spec: Option<&str>, opts: &ReaderOptions) -> Result<Box<dyn Reader>> {
    let spec = spec.map(ReaderSpec::parse);
    if let Some(ReaderSpec::Sim(name)) = &spec {
        check_sim_exists(opts, name)?;
        let ext = opts.extended_for(&format!("sim:{name}"));
        return Ok(Box::new(SimReader::open(
            &opts.data_dir,
            name,
            &opts.config.sim.profile,
            ext,
        )?));
    }
    let deadline = opts.wait.map(|w| Instant::now() + w);
    loop {
        let ctx = pcsc_t::context()?;
        let list = pcsc_t::list(&ctx)?;
        let chosen = choose(spec.as_ref(), &list)?;
        match chosen {
            Choice::Ready(name) => {
                let ext = opts.extended_for(&name);
                let timeout = opts.config.apdu.timeout();
                return Ok(Box::new(PcscReader::connect(ctx, &name, ext)?.with_timeout(timeout)));
            }
            Choice::Wait(err) => match deadline {
                Some(d) if Instant::now() < d && !crate::util::interrupted() => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => return Err(err),
            },
        }
    }
}

enum Choice {
    Ready(String),
    /// Not ready yet; the error to give if waiting is over.
    Wait(Error),
}

fn choose(spec: Option<&ReaderSpec>, list: &[PcscReaderInfo]) -> Result<Choice> {
    let pick = |r: &PcscReaderInfo| {
        if r.card_present {
            Choice::Ready(r.name.clone())
        } else {
            Choice::Wait(Error::NoCard(r.name.clone()))
        }
    };
    match spec {
        Some(ReaderSpec::Sim(_)) => unreachable!("embedded readers are opened directly"),
        Some(ReaderSpec::Index(i)) => match list.get(*i) {
            Some(r) => Ok(pick(r)),
            None if list.is_empty() => Ok(Choice::Wait(NoReaderChosen::NoReaders(*i).into())),
            None => Err(Error::Reader(format!(
                "there is no reader {i}; readers:{}",
                describe(list)
            ))),
        },
        Some(ReaderSpec::Name(sub)) => {
            let matches: Vec<&PcscReaderInfo> = list.iter().filter(|r| r.name.contains(sub.as_str())).collect();
            match matches.as_slice() {
                [one] => Ok(pick(one)),
                [] => Ok(Choice::Wait(Error::Reader(format!(
                    "no reader name contains '{sub}'; readers:{}",
                    if list.is_empty() {
                        " none".to_string()
                    } else {
                        describe(list)
                    }
                )))),
                many => {
                    if let Some(exact) = many.iter().find(|r| r.name == *sub) {
                        return Ok(pick(exact));
                    }
                    Err(NoReaderChosen::Ambiguous {
                        name: sub.clone(),
                        count: many.len(),
                        readers: describe(list),
                    }
                    .into())
                }
            }
        }
        None => {
            let with_card: Vec<&PcscReaderInfo> = list.iter().filter(|r| r.card_present).collect();
            match with_card.as_slice() {
                [one] => Ok(Choice::Ready(one.name.clone())),
                [] => Ok(Choice::Wait(
                    NoReaderChosen::NoCardAnywhere(if list.is_empty() {
                        " none".to_string()
                    } else {
                        describe(list)
                    })
                    .into(),
                )),
                many => Err(NoReaderChosen::ManyCards {
                    count: many.len(),
                    readers: describe(list),
                }
                .into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, present: bool) -> PcscReaderInfo {
        PcscReaderInfo {
            name: name.into(),
            card_present: present,
            atr: None,
        }
    }

    #[test]
    fn parses_specs() {
        assert_eq!(ReaderSpec::parse("sim:a"), ReaderSpec::Sim("a".into()));
        assert_eq!(ReaderSpec::parse("1"), ReaderSpec::Index(1));
        assert_eq!(ReaderSpec::parse("PCD 00 01"), ReaderSpec::Name("PCD 00 01".into()));
    }

    #[test]
    fn ambiguity_lists_readers() {
        let list = [info("Virtual PCD 00 00", true), info("Virtual PCD 00 01", true)];
        let Err(Error::NoReaderChosen(e @ NoReaderChosen::ManyCards { .. })) = choose(None, &list) else {
            panic!()
        };
        let msg = e.to_string();
        assert!(
            msg.contains("0: Virtual PCD 00 00") && msg.contains("1: Virtual PCD 00 01"),
            "{msg}"
        );
        let Err(Error::NoReaderChosen(e)) = choose(Some(&ReaderSpec::Name("Virtual".into())), &list) else {
            panic!()
        };
        let msg = e.to_string();
        assert!(msg.contains("matches 2 readers"), "{msg}");
        assert!(
            matches!(choose(Some(&ReaderSpec::Name("00 01".into())), &list), Ok(Choice::Ready(n)) if n == "Virtual PCD 00 01")
        );
        assert!(matches!(choose(Some(&ReaderSpec::Index(0)), &list), Ok(Choice::Ready(n)) if n == "Virtual PCD 00 00"));
        assert!(choose(Some(&ReaderSpec::Index(5)), &list).is_err());
    }

    #[test]
    fn one_card_is_chosen_and_empty_reader_waits() {
        let list = [info("A", false), info("B", true)];
        assert!(matches!(choose(None, &list), Ok(Choice::Ready(n)) if n == "B"));
        assert!(matches!(
            choose(Some(&ReaderSpec::Index(0)), &list),
            Ok(Choice::Wait(Error::NoCard(_)))
        ));
    }
}
